"""The lab's base image: Debian 12 or 13 built with debootstrap, turned into a raw ext4 disk.

The result is cached in <cache>/images/<key>/ where key is a hash of the recipe
(suite, package list, disk size, files/lab contents, the host mirror URLs and the
source of the rootfs configuration and package-list steps), so it is rebuilt when the recipe changes
and reused otherwise; the newest image of each release is kept. A cached image holds:
  disk.raw     ext4 filesystem image (root=/dev/vda), the read-only base of every VM
  disk-ROLE.raw  the same with ROLE's packages already installed (no service
               started, nothing configured): the base of a "provisioned" lab,
               where the second model's VMs skip the installs the reference
               lab has just proven (the first deploy from disk.raw installs them)
  vmlinuz      kernel from the rootfs's /boot
  initrd.img   initrd from the rootfs's /boot
  recipe.json  what the key was computed from (mirror URLs hashed, not written)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import LabError, cache_dir, host_apt_mirrors, run_command

# The Debian releases the deploy supports (tasks/preflight.py), by major version.
RELEASES = {"12": "bookworm", "13": "trixie"}
DEFAULT_RELEASE = "12"
SECOND_MODEL_RELEASE = "13"  # `lab run` proves the other release with the second model (tests/lab/conftest.py)
RELEASE_ENV = "LVSHA_LAB_RELEASE"  # `lab up` / `lab run --release`: every model's lab on that release
RECIPE_VERSION = 3
DISK_SIZE = "3G"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "udev", "openssh-server", "iproute2", "python3",
    "kmod", "linux-image-amd64", "ca-certificates", "iputils-ping", "procps",
    "ifupdown",  # as on a stock install (lvsha/lab/stock.py); it configures only lo elsewhere
)
# Guest-side files shipped from the repo: source name -> path in the image, mode.
GUEST_FILES = {
    "lvsha-lab-init": ("/usr/local/sbin/lvsha-lab-init", 0o755),
    "lvsha-lab-init.service": ("/etc/systemd/system/lvsha-lab-init.service", 0o644),
    "lvsha-lab-ipmon.service": ("/etc/systemd/system/lvsha-lab-ipmon.service", 0o644),
    "10-lvsha-mgmt.network": ("/etc/systemd/network/10-lvsha-mgmt.network", 0o644),
    "sshd-lvsha.conf": ("/etc/ssh/sshd_config.d/lvsha.conf", 0o644),
    "apt-proxy.conf": ("/etc/apt/apt.conf.d/01lvsha-proxy", 0o644),
    "modprobe-lvsha-lab.conf": ("/etc/modprobe.d/lvsha-lab.conf", 0o644),
    "initramfs-modules": ("/etc/initramfs-tools/modules", 0o644),
    "dpkg-lvsha-lab.cfg": ("/etc/dpkg/dpkg.cfg.d/lvsha-lab", 0o644),
}
# Units that would only slow boots down or grab the apt lock under the deploy's feet.
# Not systemd-networkd-wait-online: as on a real host (enabling networkd enables it),
# nginx waits for the site addresses after a reboot instead of failing to bind them.
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer",
    "apt-daily.service", "apt-daily-upgrade.service", "e2scrub_all.timer", "fstrim.timer",
    "man-db.timer", "e2scrub_reap.service",
)
# Build tool timeouts (seconds): bounded, generous for a cold proxy cache.
DEBOOTSTRAP_TIMEOUT = 1200


def guest_files_dir() -> Path:
    """files/lab in the repo (two levels above this package)."""
    return Path(__file__).resolve().parents[2] / "files" / "lab"


def provisioned_packages() -> dict[str, list[str]]:
    """Each role's packages, as the deploy installs them (tasks/packages.py)."""
    from tasks.packages import BALANCER_PACKAGES, WEB_SERVER_PACKAGES

    return {"balancer": list(BALANCER_PACKAGES), "web": list(WEB_SERVER_PACKAGES)}


def suite(release: str) -> str:
    """The Debian suite of `release` ("12" or "13"); LabError names the choices."""
    try:
        return RELEASES[str(release)]
    except KeyError:
        raise LabError(f"Debian release {release!r} is not one the lab builds "
                       f"(choose one of: {', '.join(RELEASES)})") from None


def recipe(release: str = DEFAULT_RELEASE) -> dict:
    """Everything the image depends on, as a JSON-able dict (mirrors as a hash only)."""
    files = {}
    for name in sorted(GUEST_FILES):
        files[name] = hashlib.sha256((guest_files_dir() / name).read_bytes()).hexdigest()
    mirrors = json.dumps(host_apt_mirrors(), sort_keys=True).encode()
    return {
        "version": RECIPE_VERSION,
        "suite": suite(release),
        "packages": list(PACKAGES),
        "disk_size": DISK_SIZE,
        "guest_files": {k: [files[k], GUEST_FILES[k][0], GUEST_FILES[k][1]] for k in files},
        "masked": list(MASKED_UNITS),
        "mirrors_sha256": hashlib.sha256(mirrors).hexdigest(),
        "configure_sha256": hashlib.sha256(inspect.getsource(_configure_rootfs).encode()).hexdigest(),
        # the package-list step and the apt helpers it and _provision share
        "lists_sha256": hashlib.sha256("".join(inspect.getsource(f) for f in (
            _refresh_lists, _apt, _no_downloaded_packages)).encode()).hexdigest(),
        "provisioned": provisioned_packages(),
        "provision_sha256": hashlib.sha256(inspect.getsource(_provision).encode()).hexdigest(),
    }


def recipe_key(release: str = DEFAULT_RELEASE) -> str:
    """Short hash of recipe(release): the cache key of the image."""
    return hashlib.sha256(json.dumps(recipe(release), sort_keys=True).encode()).hexdigest()[:16]


def cached_image(release: str = DEFAULT_RELEASE) -> dict | None:
    """Paths of the cached image of `release` for the current recipe, or None if not built."""
    d = cache_dir() / "images" / recipe_key(release)
    if (d / "complete").exists():
        return {"dir": str(d), "release": str(release), "disk": str(d / "disk.raw"), "format": "raw",
                "kernel": str(d / "vmlinuz"), "initrd": str(d / "initrd.img"),
                "provisioned": {role: str(d / f"disk-{role}.raw") for role in provisioned_packages()}}
    return None


def ensure_image(proxy_port: int, release: str = DEFAULT_RELEASE, progress=print) -> dict:
    """Return the cached image of `release` for the current recipe, building it first if needed.

    Building goes through the lab's apt proxy on 127.0.0.1:proxy_port (so packages
    are cached). Concurrent callers serialise on a lock file; a failed or
    interrupted build leaves nothing but an unfinished temp dir, which is removed.
    """
    img = cached_image(release)
    if img:
        return img
    images = cache_dir() / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(images / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        img = cached_image(release)
        if img:
            return img
        key = recipe_key(release)
        tmp = images / f"{key}.tmp-{os.getpid()}"
        try:
            _build(tmp, proxy_port, suite(release), progress)
            (tmp / "recipe.json").write_text(json.dumps(recipe(release), indent=1, sort_keys=True))
            (tmp / "complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
            os.rename(tmp, images / key)
        finally:
            safe_rmtree(tmp)
        _prune_old_images(images, keep=key)
    return cached_image(release)


def _build(out: Path, proxy_port: int, suite: str, progress) -> None:
    """debootstrap into out/rootfs, configure it, extract kernel/initrd, make disk.raw."""
    t0 = time.monotonic()
    rootfs = out / "rootfs"
    rootfs.mkdir(parents=True)
    mirrors = host_apt_mirrors()
    env = dict(os.environ, http_proxy=f"http://127.0.0.1:{proxy_port}", DEBIAN_FRONTEND="noninteractive")
    env.pop("https_proxy", None)
    progress(f"image: debootstrap {suite} ({len(PACKAGES)} packages) via apt proxy")
    _run_group(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite,
                rootfs, mirrors["debian"]], timeout=DEBOOTSTRAP_TIMEOUT, env=env, log=out / "debootstrap.log",
               progress=progress)
    _unmount_below(out)  # debootstrap should have, but be sure before anything else
    progress(f"image: debootstrap done in {time.monotonic() - t0:.0f}s; configuring")
    _configure_rootfs(rootfs, mirrors, suite)
    _refresh_lists(rootfs, out, proxy_port, env, progress)
    for role, packages in provisioned_packages().items():
        progress(f"image: {role} variant with {', '.join(packages)} installed")
        _provision(rootfs, out, role, packages, proxy_port, env, progress)
    boot = rootfs / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    initrds = sorted(boot.glob("initrd.img-*"))
    if not kernels or not initrds:
        raise LabError(f"no kernel/initrd in {boot}")
    shutil.copy2(kernels[-1], out / "vmlinuz")
    shutil.copy2(initrds[-1], out / "initrd.img")
    run_command(["mkfs.ext4", "-q", "-F", "-L", "lvsha-root", "-d", rootfs, out / "disk.raw", DISK_SIZE],
        timeout=300)
    safe_rmtree(rootfs)
    progress(f"image: built in {time.monotonic() - t0:.0f}s")


def _run_group(argv, timeout: float, env: dict, log: Path, progress=None, quiet: float = 30.0) -> None:
    """Run argv in its own process group; on failure, timeout or interrupt kill the whole group.

    debootstrap runs dpkg & co. in the chroot; killing only debootstrap would leave
    them writing into a tree we are about to remove. With `progress`, every `quiet`
    seconds it says what it is still waiting for, with the log's last line.
    """
    with open(log, "wb") as f:
        proc = subprocess.Popen([str(a) for a in argv], env=env, stdin=subprocess.DEVNULL,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        while True:
            left = started + timeout - time.monotonic()
            try:
                rc = proc.wait(timeout=max(0.1, min(quiet, left)))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() - started >= timeout:
                    raise LabError(f"{log.stem} did not finish within {timeout:g} s; "
                                   f"its log {log} ends:\n{_last_lines(log, 10)}") from None
                if progress:
                    progress(f"image: still running {log.stem} ({time.monotonic() - started:.0f} s), "
                             f"last logged: {_last_lines(log, 1)[:100]}")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group we created, nothing else
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        raise
    if rc != 0:
        raise LabError(f"{argv[0]} failed ({rc}):\n" + log.read_text(errors="replace")[-2000:])


def _last_lines(log: Path, count: int) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-count:])


def _configure_rootfs(rootfs: Path, mirrors: dict, suite: str) -> None:
    """Turn a fresh debootstrap tree into the lab guest image (see module docs)."""
    src = guest_files_dir()
    for name, (dest, mode) in GUEST_FILES.items():
        target = rootfs / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / name, target)
        os.chmod(target, mode)
    # apt: same mirror(s) as the host; guest reaches them through the proxy.
    lines = [f"deb {mirrors['debian']} {suite} main", f"deb {mirrors['debian']} {suite}-updates main"]
    if "security" in mirrors:
        lines.append(f"deb {mirrors['security']} {suite}-security main")
    (rootfs / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
    # Host name comes from the kernel cmdline (systemd.hostname=), per VM.
    for f in ("etc/hostname",):
        (rootfs / f).unlink(missing_ok=True)
    (rootfs / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    # Host keys are made per VM at first boot (lvsha-lab-init).
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Each VM must get its own machine-id at first boot.
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    # A small initramfs (only what mounting /dev/vda needs) boots much faster under TCG.
    conf = rootfs / "etc/initramfs-tools/initramfs.conf"
    conf.write_text(conf.read_text().replace("MODULES=most", "MODULES=list"))
    run_command(["chroot", rootfs, "update-initramfs", "-u", "-k", "all"], timeout=600)
    chroot = ["chroot", rootfs, "systemctl"]
    run_command(chroot + ["enable", "systemd-networkd.service", "ssh.service", "lvsha-lab-init.service",
                  "lvsha-lab-ipmon.service"])
    run_command(chroot + ["mask", *MASKED_UNITS])


def _apt(rootfs: Path, proxy_port: int) -> list[str]:
    """apt-get in the chroot `rootfs`, through the build's apt proxy (the guest's own
    proxy setting names an address only a VM reaches)."""
    return ["chroot", rootfs, "apt-get", "-q", "-o", f"Acquire::http::Proxy=http://127.0.0.1:{proxy_port}"]


def _no_downloaded_packages(rootfs: Path) -> None:
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


def _refresh_lists(rootfs: Path, out: Path, proxy_port: int, env: dict, progress=None) -> None:
    """The image's package lists, read (natively) when it is built and kept, as a stock
    install keeps the ones its installer read: the deploy's `apt-get update` then fetches
    only the indexes that changed since. Without them every guest decompressed and parsed
    the whole archive's lists under TCG: ~110 s of the reference's first deploy, five
    guests at once on two cores (docs/lab.md). No downloaded package is kept."""
    _run_group([*_apt(rootfs, proxy_port), "update"], timeout=600, env=env, log=out / "lists.log", progress=progress)
    _no_downloaded_packages(rootfs)


def _provision(rootfs: Path, out: Path, role: str, packages: list[str], proxy_port: int, env: dict,
               progress=None) -> None:
    """out/disk-ROLE.raw: a copy of the configured rootfs with `packages`
    installed in a chroot (natively: minutes saved per VM under TCG). Services
    are not started (policy-rc.d); Debian's postinst enables them, as an apt
    install on a server does, and the deploy takes it from there."""
    work = out / f"rootfs-{role}"
    run_command(["cp", "-a", rootfs, work], timeout=300)
    try:
        policy = work / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        # the lists the base image keeps (_refresh_lists), refreshed by the base's own build
        _run_group([*_apt(work, proxy_port), "install", "-y", "--no-install-recommends", *packages], timeout=1200,
                   env=env, log=out / f"provision-{role}-install.log", progress=progress)
        policy.unlink()
        _no_downloaded_packages(work)
        run_command(["mkfs.ext4", "-q", "-F", "-L", "lvsha-root", "-d", work, out / f"disk-{role}.raw", DISK_SIZE],
            timeout=300)
    finally:
        safe_rmtree(work)


def _mounts_below(path: Path) -> list[str]:
    """Mount points at or below path, deepest first."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mp = line.split()[1].encode().decode("unicode_escape")
            if mp == prefix or mp.startswith(prefix + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def _unmount_below(path: Path) -> None:
    """Unmount anything debootstrap left mounted in its target (e.g. after Ctrl-C)."""
    for mp in _mounts_below(path):
        run_command(["umount", "-l", mp], check=False, timeout=30)


def safe_rmtree(path: Path) -> None:
    """rm -rf path, after making sure nothing is mounted below it (never recurse into /proc)."""
    path = Path(path)
    if not path.exists():
        return
    _unmount_below(path)
    if _mounts_below(path):
        raise LabError(f"refusing to remove {path}: still has mounts below it")
    shutil.rmtree(path, ignore_errors=True)


def _suite_of(image_dir: Path) -> str | None:
    try:
        return json.loads((image_dir / "recipe.json").read_text()).get("suite")
    except (OSError, ValueError):
        return None


def _prune_old_images(images: Path, keep: str) -> None:
    """Drop the cached images of older recipes of `keep`'s release (the other
    release's newest image stays), and stale temp dirs of dead builds."""
    kept_suite = _suite_of(images / keep)
    for d in images.iterdir():
        if not d.is_dir() or d.name == keep:
            continue
        if ".tmp-" in d.name:
            pid = d.name.rsplit("-", 1)[-1]
            if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
                continue  # another build still running
        elif _suite_of(d) not in (kept_suite, None):
            continue  # the newest image of another release
        safe_rmtree(d)
