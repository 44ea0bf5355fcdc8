"""Put files rendered from the model (lvsha.render) onto a host."""

from io import StringIO
from pathlib import PurePosixPath

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.api.output import format_text
from pyinfra.facts.files import FileContents
from pyinfra.operations.util.files import generate_color_diff

from lvsha.render import RenderedFile
from tasks.facts import managed_state
from tasks.operations import sha1_of


def is_as_rendered(path: str, content: str, mode: str) -> bool:
    found = managed_state(path) or {}
    return (found.get("sha1") == sha1_of(content) and found.get("mode") is not None
            and int(found["mode"], 8) == int(mode, 8) and (found.get("user"), found.get("group")) == ("root", "root"))


@operation()
def rendered_file(rendered: RenderedFile, check: str | None = None, then: tuple[str, ...] = (),
                  after: str | None = None):
    """`rendered.path` holds `rendered.content`, root:root, `rendered.mode`.
    Checked against one fact for the whole host; only a file that differs is
    written, and never in place: it is uploaded beside the file, given its owner
    and mode, then renamed over it, so a service reading it at that moment (a
    script heartbeat runs, lvsha.env that every helper reads) sees the old file
    or the new one, never half of one. With `check` (a command, `{}` standing for
    the staged file) the staged file is checked on the host before the rename:
    a non-zero exit fails the operation and leaves the file in place as it was.
    `then` (commands) run right after the rename, in the same operation, only when
    the file was written. With --diff the change is shown as pyinfra's files.put
    shows it. `after`: the content an earlier operation of this run leaves at the
    path (written with the same mode and owner), what this one then compares with
    instead of the file as it was when the run began."""
    if (rendered.content == after if after is not None
            else is_as_rendered(rendered.path, rendered.content, rendered.mode)):
        host.noop(f"{rendered.path} is up to date")
        return
    if state.config.DIFF:
        current = host.get_fact(FileContents, path=rendered.path)
        host.log(f"Will {'modify' if current is not None else 'create'} {format_text(rendered.path, bold=True)}",
                 logger.info)
        for line in generate_color_diff([f"{line}\n" for line in current or []],
                                        rendered.content.splitlines(keepends=True)):
            logger.info("  %s", line)
        logger.info("")
    staged = f"{rendered.path}.lvsha-new"
    yield StringCommand("mkdir", "-p", str(PurePosixPath(rendered.path).parent))
    yield FileUploadCommand(StringIO(rendered.content), staged, remote_temp_filename=host.get_temp_filename(staged))
    yield StringCommand("chown", "root:root", staged)
    yield StringCommand("chmod", rendered.mode, staged)
    if check:
        yield StringCommand(*check.replace("{}", staged).split())
    yield StringCommand("mv", "-f", staged, rendered.path)
    for command in then:
        yield StringCommand(*command.split())


def put(rendered: RenderedFile, check: str | None = None, then: tuple[str, ...] = ()):
    """Upload one rendered file with its mode (checked first with `check`, if
    given; `then` run once it is in place); returns the operation's result."""
    if check:
        return rendered_file(name=f"Check and write {rendered.path}", rendered=rendered, check=check, then=then)
    return rendered_file(name=f"Write {rendered.path}", rendered=rendered, then=then)
