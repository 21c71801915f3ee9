"""Writing files so that a crash never leaves a half-written one behind."""
import json
import os
import tempfile


def write_text_atomic(path, text, fsync=True):
    """Write text to a temporary file next to `path` and rename it over `path` (readers see old or new)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path, obj, fsync=True):
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=1, default=str), fsync=fsync)
