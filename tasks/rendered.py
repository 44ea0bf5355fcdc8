"""Put files rendered from the model (lvsha.render) onto a host."""

from io import StringIO

from pyinfra.operations import files

from lvsha.render import RenderedFile


def put(rendered: RenderedFile):
    """Upload one rendered file with its mode; returns the operation's result."""
    return files.put(
        name=f"Write {rendered.path}",
        src=StringIO(rendered.content),
        dest=rendered.path,
        user="root",
        group="root",
        mode=rendered.mode,
    )
