"""Reading an untrusted zip without letting it stop the batch or fill the disk.

Every upload is read through ``read_zip``: nothing is extracted by the zip's own names, each entry is
checked before it is read, and whatever is wrong becomes a note (an entry skipped) or a problem (the
upload not graded) instead of an exception:

* file names in any encoding: names without the UTF-8 flag are decoded as UTF-8 when they are, else
  as cp437 (the zip standard's default); a zip whose flagged UTF-8 names are not UTF-8 is a problem;
* encrypted, corrupt (bad CRC, truncated), symlink, absolute, ``..`` and duplicate entries are skipped;
* limits on the number of entries, each entry's and the total expanded size, and the compression ratio
  (zip bombs) refuse the whole upload before anything is expanded.
"""
from __future__ import annotations

import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

JUNK_PARTS = ("__MACOSX", ".ipynb_checkpoints", "__pycache__")


@dataclass(frozen=True)
class Limits:
    """What one upload may hold (defaults: far above any honest submission of this course)."""

    max_entries: int = 1000
    max_entry_bytes: int = 64 * 2**20
    max_total_bytes: int = 256 * 2**20
    max_ratio: float = 200.0  # expanded / compressed, for entries over 1 MiB


@dataclass
class ZipContents:
    """What could be read from one zip: entry name -> bytes, and what went wrong."""

    files: dict[str, bytes] = field(default_factory=dict)
    times: dict[str, tuple] = field(default_factory=dict)  # entry name -> the zip's date_time
    notes: list[str] = field(default_factory=list)  # entries skipped
    problems: list[str] = field(default_factory=list)  # the zip as a whole cannot be used


def decode_name(info: zipfile.ZipInfo) -> str:
    """The entry's name: zipfile decodes names without the UTF-8 flag as cp437; many tools write
    UTF-8 without setting it, so try that first."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name


def safe_name(name: str) -> str | None:
    """The entry's relative POSIX path, or None if it points outside the archive (absolute, ``..``,
    a drive letter) or is junk (``__MACOSX``, ``._x``, checkpoints)."""
    name = name.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (path.parts and ":" in path.parts[0]) or ".." in path.parts:
        return None
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts or any(p in JUNK_PARTS for p in parts) or parts[-1].startswith("._"):
        return None
    return "/".join(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def read_zip(path: Path, limits: Limits = Limits(), label: str | None = None) -> ZipContents:
    """Every readable file of the zip at ``path``; never raises for a bad upload.

    Args:
        path: the zip.
        limits: entry count and size limits.
        label: the upload's name in notes (default: the file name).
    """
    label = label or path.name
    out = ZipContents()
    try:
        zf = zipfile.ZipFile(path)
    except UnicodeDecodeError:
        out.problems.append(f"{label}: its file names are marked UTF-8 but are not (a broken zip tool); re-zip and upload again")
        return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        out.problems.append(f"{label} is not a readable zip ({type(e).__name__}: {e})")
        return out
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_entries:
            out.problems.append(f"{label} holds {len(infos)} files, more than the limit of {limits.max_entries}; not unpacked")
            return out
        total = sum(i.file_size for i in infos)
        if total > limits.max_total_bytes:
            out.problems.append(f"{label} expands to {total / 2**20:.0f} MiB, more than the limit of "
                                f"{limits.max_total_bytes / 2**20:.0f} MiB; not unpacked")
            return out
        for info in infos:
            shown = decode_name(info)
            name = safe_name(shown)
            if name is None:
                if ".." in shown or shown.startswith(("/", "\\")) or ":" in shown.split("/")[0]:
                    out.notes.append(f"{label}: skipped {shown!r} (a path outside the zip)")
                continue
            if _is_symlink(info):
                out.notes.append(f"{label}: skipped the symbolic link {name!r}")
            elif info.flag_bits & 0x1:
                out.notes.append(f"{label}: skipped the encrypted file {name!r} (uploads must not have a password)")
            elif name in out.files:
                out.notes.append(f"{label}: {name!r} appears twice in the zip; graded the first")
            elif info.file_size > limits.max_entry_bytes:
                out.notes.append(f"{label}: skipped {name!r} ({info.file_size / 2**20:.0f} MiB, over the "
                                 f"{limits.max_entry_bytes / 2**20:.0f} MiB limit per file)")
            elif info.file_size > 2**20 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
                out.problems.append(f"{label}: {name!r} would expand {info.file_size / max(info.compress_size, 1):.0f}x "
                                    f"(a zip bomb?); not unpacked")
                out.files.clear()
                return out
            else:
                try:
                    out.files[name] = zf.read(info)
                    out.times[name] = info.date_time
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as e:
                    out.notes.append(f"{label}: skipped the corrupt file {name!r} ({type(e).__name__}: {e})")
    return out
