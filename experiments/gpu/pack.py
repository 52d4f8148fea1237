"""Fill the git-ignored folder `.gpu_carry/` with what a GPU machine without kprl's simulator needs: wheels for
Python 3.12 on x86-64 Linux (dm_control trimmed to the control suite, mujoco, tyro and the packages they import
that such a machine lacks) and the EGL userspace libraries as .deb files. `experiments/gpu/run_grid.sh` installs
them there. Run it with the project's virtual environment (it pins the versions installed there):

    .venv/bin/python experiments/gpu/pack.py                    # -> .gpu_carry/{wheels,gl}/, size check
    .venv/bin/python experiments/gpu/pack.py --python-version 3.11 --dest /tmp/carry311 --no-gl --verify
        # the same for this machine's Python, then install it into a scratch folder and render cartpole with it

Everything that travels to the GPU machine (the repository's tracked and untracked-not-ignored files plus the
carry folder) must stay within 64 MiB: the script prints the sizes and exits 1 above that. imageio-ffmpeg (~30 MB)
does not fit beside mujoco, so the GPU runs record no videos.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # pragma: no cover - pip always vendors it
    from pip._vendor.packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 64 * 2**20
WARN_MARGIN_BYTES = 4 * 2**20

# Distributions carried as wheels. Versions: the `==` pins of pyproject.toml, else the version installed in the
# interpreter running this script (the project's .venv).
CARRIED = ("dm_control", "mujoco", "tyro", "dm-env", "dm-tree", "PyOpenGL", "glfw", "docstring-parser", "typeguard",
           "typing-extensions")  # fmt: skip
# Requirements the GPU machine's Python already satisfies (/work/.library/device/KINDS.md, nvidia-h200).
ON_DEVICE = frozenset({"absl-py", "numpy", "lxml", "protobuf", "pyparsing", "requests", "scipy", "setuptools", "tqdm",
                       "etils", "attrs", "wrapt", "typing-extensions", "pillow", "imageio", "matplotlib", "rich",
                       "tensorboard", "pyyaml", "torch"})  # fmt: skip
# Requirements left behind on purpose: nothing that `kprl train` reaches imports them.
NOT_NEEDED = {
    "labmaze": "imported only by dm_control.locomotion, which the trimmed wheel drops",
    "websockets": "imported only by mujoco's viewer and studio",
}
# Parts of the dm_control wheel that `from dm_control import suite`, loading a suite task and rendering it never
# read (~55 of its 56 MB: the locomotion assets, the dog's meshes, test data).
DM_CONTROL_DROP = (
    "dm_control/locomotion/*", "dm_control/manipulation/*", "dm_control/composer/*", "dm_control/entities/*",
    "dm_control/blender/*", "dm_control/third_party/*", "dm_control/autowrap/*", "dm_control/mujoco/testing/*",
    "dm_control/suite/dog_assets/*", "dm_control/suite/all_domains.png", "dm_control/*_test.py",
)  # fmt: skip
# The EGL userspace libraries (glvnd); installed on the GPU machine only where it has no libEGL.so.1.
GL_DEBS = ("libegl1", "libglvnd0", "libopengl0", "libgl1", "libglx0", "libgles2")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")  # fmt: skip


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(names: tuple[str, ...] = CARRIED, pyproject: Path = REPO / "pyproject.toml") -> dict[str, str]:
    """``{name: version}``: pyproject.toml's ``name==version`` where it pins one, else the installed version."""
    pins = {canonical(m[1]): m[2] for m in re.finditer(r'"([A-Za-z0-9_.-]+)==([^"\s;]+)"', pyproject.read_text())}
    versions = {}
    for name in names:
        version = pins.get(canonical(name))
        if version is None:
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                sys.exit(f"pack.py: {name} is neither pinned in pyproject.toml nor installed here: run it with .venv/bin/python")
        versions[name] = version
    return versions


def download(pins: dict[str, str], dest: Path, python_version: str) -> list[Path]:
    """``pip download`` one wheel per pin (no dependencies) for CPython ``python_version`` on manylinux x86-64."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "-d", str(dest)]  # fmt: skip
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + [f"{n}=={v}" for n, v in pins.items()], check=True)
    wheels = sorted(dest.glob("*.whl"))
    found = {canonical(w.name.split("-")[0]) for w in wheels}
    missing = [n for n in pins if canonical(n) not in found]
    if missing:
        sys.exit(f"pack.py: pip downloaded no wheel for {missing}")
    return wheels


def trim_wheel(src: Path, dst: Path, drop: tuple[str, ...]) -> tuple[int, int]:
    """Copy wheel ``src`` to ``dst`` without the members matching any fnmatch pattern of ``drop``; the RECORD
    keeps the lines (and hashes) of the members kept. Returns (members dropped, members kept)."""
    dropped = kept = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        names = set()
        record_name = None
        for info in zin.infolist():
            if any(fnmatch.fnmatchcase(info.filename, p) for p in drop):
                dropped += 1
                continue
            if info.filename.endswith(".dist-info/RECORD"):
                record_name = info.filename
                continue
            names.add(info.filename)
            zout.writestr(info, zin.read(info))
            kept += 1
        if record_name is None:
            raise ValueError(f"{src.name} has no RECORD")
        lines = zin.read(record_name).decode().splitlines()
        record = [ln for ln in lines if ln and (ln.split(",")[0] in names or ln.split(",")[0] == record_name)]
        zout.writestr(zin.getinfo(record_name), "\n".join(record) + "\n")
    return dropped, kept


def requirements(wheel: Path, python_version: str = "3.12") -> set[str]:
    """Canonical names of ``wheel``'s Requires-Dist that apply without extras on ``python_version``."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    env = {"python_version": python_version, "python_full_version": python_version + ".0", "extra": "",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}  # fmt: skip
    names = set()
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(env):
                names.add(canonical(req.name))
    return names


def unresolved(wheels: list[Path], python_version: str = "3.12", on_device: frozenset[str] = ON_DEVICE,
               not_needed: dict[str, str] = NOT_NEEDED) -> dict[str, set[str]]:  # fmt: skip
    """``{wheel name: requirements neither carried, nor on the device, nor deliberately left}``; empty when every
    requirement is accounted for."""
    carried = {canonical(w.name.split("-")[0]) for w in wheels}
    known = carried | set(on_device) | {canonical(n) for n in not_needed}
    gaps = {w.name: requirements(w, python_version) - known for w in wheels}
    return {k: v for k, v in gaps.items() if v}


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what a device call sends besides the carry: tracked and untracked-not-ignored files (and shared/)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout  # fmt: skip
    total = sum(os.lstat(repo / p).st_size for p in set(out.decode().split("\0")) if p and os.path.lexists(repo / p))
    shared = repo / "shared"
    if shared.is_dir():
        total += folder_bytes(shared)
    return total


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def check_size(tree: int, carry: int, limit: int = LIMIT_BYTES) -> str:
    """One line saying the sizes; raises SystemExit when tree + carry exceeds ``limit``."""
    mib = 2**20
    line = f"tree {tree / mib:.1f} MiB + carry {carry / mib:.1f} MiB = {(tree + carry) / mib:.1f} MiB of {limit / mib:.0f} MiB"
    if tree + carry > limit:
        raise SystemExit(f"pack.py: too large to travel: {line}")
    if tree + carry > limit - WARN_MARGIN_BYTES:
        line += " (less than 4 MiB to spare)"
    return line


def download_gl(dest: Path) -> None:
    """``apt-get download`` the amd64 EGL .debs into ``dest`` (apt lists kept in a temporary folder)."""
    with tempfile.TemporaryDirectory() as lists:
        (Path(lists) / "partial").mkdir()
        opts = ["-oAPT::Architecture=amd64", "-oAPT::Architectures=amd64", f"-oDir::State::Lists={lists}"]
        subprocess.run(["apt-get", *opts, "-qq", "update"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", *opts, "-qq", "download", *GL_DEBS], check=True, cwd=dest)


def verify(wheels_dir: Path) -> None:
    """Install the carried wheels into a scratch folder and render cartpole swingup from it with this Python
    (meaningful when the wheels were packed for this Python's version)."""
    with tempfile.TemporaryDirectory() as site:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", site, *map(str, sorted(wheels_dir.glob("*.whl")))], check=True)  # fmt: skip
        env = {**os.environ, "PYTHONPATH": site, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        check = Path(__file__).with_name("render_check.py")
        subprocess.run([sys.executable, str(check), "--expect-under", site], env=env, check=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".gpu_carry", help="carry folder (emptied first)")
    parser.add_argument("--python-version", default="3.12", help="CPython version of the wheels (the GPU's: 3.12)")
    parser.add_argument("--no-gl", action="store_true", help="leave out the EGL .debs")
    parser.add_argument("--verify", action="store_true", help="install the wheels into a scratch folder and render "
                        "cartpole with this Python (use with --python-version of this Python)")  # fmt: skip
    args = parser.parse_args(argv)

    pins = pinned_versions()
    if args.dest.exists():
        shutil.rmtree(args.dest)
    wheels_dir = args.dest / "wheels"
    wheels_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        for wheel in download(pins, Path(tmp), args.python_version):
            if canonical(wheel.name.split("-")[0]) == "dm-control":
                dropped, kept = trim_wheel(wheel, wheels_dir / wheel.name, DM_CONTROL_DROP)
                print(f"{wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB -> "
                      f"{(wheels_dir / wheel.name).stat().st_size / 2**20:.1f} MiB ({dropped} files dropped, {kept} kept)")  # fmt: skip
            else:
                shutil.copy2(wheel, wheels_dir / wheel.name)
    wheels = sorted(wheels_dir.glob("*.whl"))
    for wheel in wheels:
        print(f"  {wheel.name}  {wheel.stat().st_size / 2**20:6.2f} MiB  sha256 {sha256(wheel)}")
    gaps = unresolved(wheels, args.python_version)
    if gaps:
        sys.exit(f"pack.py: requirements neither carried nor on the GPU machine: {gaps}")
    if not args.no_gl:
        (args.dest / "gl").mkdir()
        download_gl(args.dest / "gl")
        print("  gl: " + " ".join(sorted(p.name for p in (args.dest / "gl").glob("*.deb"))))
    print(check_size(tree_bytes(), folder_bytes(args.dest)))
    if args.verify:
        verify(wheels_dir)


if __name__ == "__main__":
    main()
