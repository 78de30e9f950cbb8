"""A minimal PEP 517 build backend for ctp-client, standard library only.

It builds a pure-Python wheel (py3-none-any) of the packages listed under
``[tool.ctp_build]`` in pyproject.toml, an sdist, and an editable wheel (PEP 660, a ``.pth``
file pointing at ``src``). Metadata comes from pyproject's ``[project]`` table. It exists so
that ``pip install ./clients/python`` needs nothing from a package index: setuptools would
have to be downloaded into pip's isolated build environment.
"""
import base64
import hashlib
import io
import os
import re
import tarfile
import time
import zipfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import tomllib  # Python 3.11+
except ImportError:  # pragma: no cover - older Pythons get tomli through the hooks below
    tomllib = None


def _load():
    path = os.path.join(HERE, "pyproject.toml")
    if tomllib is None:
        import tomli as toml  # noqa: F401  (requested by get_requires_for_build_*)

        with open(path, "rb") as f:
            return toml.load(f)
    with open(path, "rb") as f:
        return tomllib.load(f)


def _requires():
    return [] if tomllib is not None else ["tomli>=1.1"]


def get_requires_for_build_wheel(config_settings=None):
    return _requires()


def get_requires_for_build_sdist(config_settings=None):
    return _requires()


def get_requires_for_build_editable(config_settings=None):
    return _requires()


def _dist_name(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata(project):
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {project['name']}",
        f"Version: {project['version']}",
        f"Summary: {project.get('description', '')}",
    ]
    lic = project.get("license", {})
    if isinstance(lic, dict) and "text" in lic:
        lines.append(f"License: {lic['text']}")
    if "requires-python" in project:
        lines.append(f"Requires-Python: {project['requires-python']}")
    for dep in project.get("dependencies", []):
        lines.append(f"Requires-Dist: {dep}")
    readme = project.get("readme")
    body = ""
    if isinstance(readme, str) and os.path.exists(os.path.join(HERE, readme)):
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(HERE, readme), encoding="utf-8") as f:
            body = f.read()
    return "\n".join(lines) + "\n\n" + body


def _package_files(cfg):
    src = os.path.join(HERE, cfg.get("package-dir", "src"))
    out = []
    for pkg in cfg["packages"]:
        d = os.path.join(src, *pkg.split("."))
        for name in sorted(os.listdir(d)):
            if name.endswith((".py", ".pyi")) or name == "py.typed":
                out.append((os.path.join(d, name), "/".join(pkg.split(".") + [name])))
    return out


class _Wheel:
    def __init__(self, path):
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.records = []

    def add(self, arcname, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zip.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self.records.append(f"{arcname},sha256={digest},{len(data)}")

    def close(self, dist_info):
        record = f"{dist_info}/RECORD"
        self.records.append(f"{record},,")
        info = zipfile.ZipInfo(record, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        self.zip.writestr(info, "\n".join(self.records) + "\n")
        self.zip.close()


def _build(wheel_directory, editable):
    conf = _load()
    project, cfg = conf["project"], conf["tool"]["ctp_build"]
    name, version = _dist_name(project["name"]), project["version"]
    filename = f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    whl = _Wheel(os.path.join(wheel_directory, filename))
    if editable:
        src = os.path.join(HERE, cfg.get("package-dir", "src"))
        whl.add(f"__editable__.{name}.pth", src + "\n")
    else:
        for path, arcname in _package_files(cfg):
            with open(path, "rb") as f:
                whl.add(arcname, f.read())
    whl.add(f"{dist_info}/METADATA", _metadata(project))
    whl.add(
        f"{dist_info}/WHEEL",
        "Wheel-Version: 1.0\nGenerator: ctp_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    )
    whl.close(dist_info)
    return filename


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _build(wheel_directory, editable=False)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _build(wheel_directory, editable=True)


def build_sdist(sdist_directory, config_settings=None):
    conf = _load()
    project = conf["project"]
    base = f"{_dist_name(project['name'])}-{project['version']}"
    filename = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, filename), "w:gz") as tar:
        for rel in ["pyproject.toml", "README.md", "_build", "src", "tests", "tools"]:
            path = os.path.join(HERE, rel)
            if os.path.exists(path):
                tar.add(path, arcname=f"{base}/{rel}",
                        filter=lambda t: None if "__pycache__" in t.name else t)
        data = _metadata(project).encode("utf-8")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return filename
