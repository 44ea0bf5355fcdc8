"""Put files rendered from the model (lvsha.render) onto a host."""

from io import StringIO

from pyinfra import host
from pyinfra.api import operation
from pyinfra.operations import files

from lvsha.render import RenderedFile
from tasks.facts import managed_state
from tasks.operations import sha1_of


def is_as_rendered(path: str, content: str, mode: str) -> bool:
    found = managed_state(path) or {}
    return (found.get("sha1") == sha1_of(content) and found.get("mode") is not None
            and int(found["mode"], 8) == int(mode, 8) and (found.get("user"), found.get("group")) == ("root", "root"))


@operation()
def rendered_file(rendered: RenderedFile):
    """`rendered.path` holds `rendered.content`, root:root, `rendered.mode`.
    Checked against one fact for the whole host; only a file that differs goes
    through pyinfra's files.put (which shows its diff under --diff)."""
    if is_as_rendered(rendered.path, rendered.content, rendered.mode):
        host.noop(f"{rendered.path} is up to date")
        return
    yield from files.put._inner(src=StringIO(rendered.content), dest=rendered.path, user="root", group="root",
                                mode=rendered.mode)


def put(rendered: RenderedFile):
    """Upload one rendered file with its mode; returns the operation's result."""
    return rendered_file(name=f"Write {rendered.path}", rendered=rendered)
