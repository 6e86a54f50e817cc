"""Small file operations on Ray storage, local paths or s3:// URIs alike (via pyarrow.fs).

An S3-compatible endpoint is given in the URI as Ray expects it:
`s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http`; credentials from AWS_*.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def join(uri: str, *parts: str) -> str:
    """Append path parts to a local path or URI, keeping a URI's query string at the end."""
    if not is_remote(uri):
        return str(Path(uri.removeprefix("file://")).joinpath(*parts))
    scheme, netloc, path, query, fragment = urlsplit(uri)
    path = "/".join([path.rstrip("/"), *parts])
    return urlunsplit((scheme, netloc, path, query, fragment))


def _filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if not is_remote(uri):
        return pyarrow.fs.LocalFileSystem(), str(Path(uri.removeprefix("file://")).resolve())
    return pyarrow.fs.FileSystem.from_uri(uri)


def write_text(uri: str, text: str) -> None:
    fs, path = _filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(text.encode())


def read_text(uri: str) -> str | None:
    """The file's text, or None when it does not exist."""
    fs, path = _filesystem(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as src:
        return src.read().decode()


def list_dirs(uri: str) -> list[str]:
    """Names of the sub-directories of `uri` (empty when it does not exist)."""
    fs, path = _filesystem(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory)
