"""``hf=URL``: a Hugging Face dataset saved to disk or as parquet, local or ``gs://``, read
into a :class:`evo.data.decoding.Source`.

What ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` writes (Arrow
stream files, ``state.json``, ``dataset_info.json``, ``dataset_dict.json``) or parquet
files (one file; or a folder of ``{split}-*.parquet`` / ``{split}/*.parquet`` files, as on
the Hub), read with pyarrow alone (``pip install 'evo[hf]'``), offline: the ``datasets``
package is not needed. The image column is the one whose feature is ``Image`` (encoded
bytes, or a path), binary, or nested lists (``Array2D``/``Array3D``); the label column the
``ClassLabel`` one (its names are the classes), or integers, or strings (sorted into
classes). ``data.image_column`` / ``data.label_column`` name them when the features do not.
Splits: ``train``; ``validation``/``valid``/``val``; ``test``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dna.strict_json import UntrustedJSONError, parse_json

from evo.data.arrays import as_nchw, pixel_scale
from evo.data.decoding import DataProblem, Part, Source
from evo.data.imagefolder import open_fs
from evo.errors import one_line

HF_SPLITS = {"train": "train", "training": "train", "validation": "val", "valid": "val", "val": "val",
             "dev": "val", "test": "test", "testing": "test"}
IMAGE_NAMES = ("image", "img", "images", "pixel_values", "picture", "photo")
LABEL_NAMES = ("label", "labels", "fine_label", "class", "target", "category")
MAX_JSON_BYTES = 16 * 2**20


def read_hf(url: str, image_column: str | None = None, label_column: str | None = None) -> Source:
    """The Hugging Face dataset at ``url`` (a ``save_to_disk`` folder, a parquet file, or a
    folder of parquet files) as a Source; see the module's docstring. DataProblem (one line
    naming the file) when it is none of these, has no usable image or label column, or its
    labels do not fit its classes."""
    kind = "hf"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DataProblem("hf: reading Hugging Face datasets needs pyarrow: pip install 'evo[hf]'") from None
    fs, root = open_fs(kind, url)
    try:
        tables, features = _hf_tables(fs, root, url)
    except DataProblem:
        raise
    except Exception as exc:
        raise DataProblem(f"{kind}: cannot read {url}: {one_line(exc)}") from None
    if "train" not in tables:
        raise DataProblem(f"{kind}: {url} has no train split (found {', '.join(sorted(tables)) or 'nothing'})")
    schema = tables["train"].schema
    image_col = _pick_column(image_column, features, "Image", IMAGE_NAMES, schema, url, "image")
    label_col = _pick_column(label_column, features, "ClassLabel", LABEL_NAMES, schema, url, "label")
    names = _hf_class_names(features.get(label_col), tables, label_col, url)
    index = {n: i for i, n in enumerate(names)}
    parts = {}
    for split, table in tables.items():
        if image_col not in table.column_names or label_col not in table.column_names:
            raise DataProblem(f"{kind}: {url}: split {split} lacks column {image_col!r} or {label_col!r}")
        labels = _hf_labels(table.column(label_col), index, names, url, split, label_col)
        parts[split] = _hf_images(fs, table.column(image_col), labels, url, split, image_col)
    facts = {"files": sum(len(p) for p in parts.values()), "columns": {"image": image_col, "label": label_col}}
    return Source(kind, url, parts, names, fetch=_fetch_path, facts=facts)


def _hf_tables(fs: Any, root: str, url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({split: pyarrow.Table}, features)`` of a saved dataset or parquet files."""
    import pyarrow.parquet as pq

    if not fs.exists(root):
        raise DataProblem(f"hf: {url} does not exist")
    if fs.isfile(root):
        if not root.endswith(".parquet"):
            raise DataProblem(f"hf: {url} is a file but not .parquet; expected a datasets.save_to_disk folder "
                              "or parquet files")
        table = _read_parquet(fs, root, url)
        return {"train": table}, _parquet_features(table)
    names = {p.rstrip("/").rsplit("/", 1)[-1]: p for p in fs.ls(root, detail=False)}
    if "dataset_dict.json" in names:
        splits = _json(fs, names["dataset_dict.json"], url).get("splits")
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise DataProblem(f"hf: {url}/dataset_dict.json has no list of splits")
        tables, features = {}, {}
        for split in splits:
            ours = HF_SPLITS.get(split.lower())
            if ours is None or ours in tables:
                continue   # other splits (unsupervised, extra) are not used
            tables[ours], features = _saved_split(fs, f"{root}/{split}", f"{url.rstrip('/')}/{split}")
        return tables, features
    if "state.json" in names:
        table, features = _saved_split(fs, root, url)
        return {"train": table}, features
    parquet = sorted(p for p in fs.find(root) if p.endswith(".parquet"))
    if not parquet:
        raise DataProblem(f"hf: {url} holds no dataset: expected dataset_dict.json or state.json "
                          "(datasets.save_to_disk) or .parquet files")
    by_split: dict[str, list[str]] = {}
    for p in parquet:
        rel = p[len(root) + 1:]
        split = _parquet_split(rel)
        if split is None:
            raise DataProblem(f"hf: {url.rstrip('/')}/{rel}: cannot tell its split; name parquet files "
                              "train-*.parquet, validation-*.parquet, test-*.parquet (or put them in such folders)")
        by_split.setdefault(split, []).append(p)
    import pyarrow as pa

    tables = {s: pa.concat_tables([_read_parquet(fs, p, url) for p in ps]) for s, ps in by_split.items()}
    return tables, _parquet_features(next(iter(tables.values())))


def _parquet_split(rel: str) -> str | None:
    for part in rel.split("/")[::-1]:
        stem = part.removesuffix(".parquet").lower()
        for name in (stem, stem.split("-", 1)[0], stem.split("_", 1)[0]):
            if name in HF_SPLITS:
                return HF_SPLITS[name]
    return None


def _read_parquet(fs: Any, path: str, url: str):
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as f:
            return pq.read_table(f)
    except Exception as exc:
        raise DataProblem(f"hf: {path} is not a readable parquet file ({one_line(exc)})") from None


def _parquet_features(table: Any) -> dict[str, Any]:
    meta = (table.schema.metadata or {}).get(b"huggingface")
    if not meta:
        return {}
    try:
        info = parse_json(meta, "huggingface metadata")
        features = info.get("info", {}).get("features", {})
    except (UntrustedJSONError, AttributeError):
        return {}
    return features if isinstance(features, dict) else {}


def _saved_split(fs: Any, folder: str, shown: str) -> tuple[Any, dict[str, Any]]:
    """One split saved by ``save_to_disk``: its Arrow stream files (as state.json lists
    them), concatenated, and the features of dataset_info.json."""
    import pyarrow as pa

    state = _json(fs, f"{folder}/state.json", shown)
    files = state.get("_data_files")
    if not isinstance(files, list) or not files:
        raise DataProblem(f"hf: {shown}/state.json lists no data files")
    tables = []
    for entry in files:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or "/" in name or name.startswith("."):
            raise DataProblem(f"hf: {shown}/state.json names a bad data file {name!r}")
        try:
            with fs.open(f"{folder}/{name}", "rb") as f:
                tables.append(pa.ipc.open_stream(f).read_all())
        except FileNotFoundError:
            raise DataProblem(f"hf: {shown}/{name} is missing (listed in state.json)") from None
        except Exception as exc:
            raise DataProblem(f"hf: {shown}/{name} is not an Arrow stream ({one_line(exc)})") from None
    features: dict[str, Any] = {}
    try:
        info = _json(fs, f"{folder}/dataset_info.json", shown)
        features = info.get("features") if isinstance(info.get("features"), dict) else {}
    except DataProblem:
        pass   # no dataset_info.json: columns are told by their names and types
    return pa.concat_tables(tables), features


def _json(fs: Any, path: str, shown: str) -> dict[str, Any]:
    name = path.rsplit("/", 1)[-1]
    try:
        with fs.open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise DataProblem(f"hf: {shown}/{name} is missing") from None
    if len(raw) > MAX_JSON_BYTES:
        raise DataProblem(f"hf: {shown}/{name} is larger than {MAX_JSON_BYTES // 2**20} MiB")
    try:
        obj = parse_json(raw, name, max_bytes=MAX_JSON_BYTES)
    except UntrustedJSONError:
        raise DataProblem(f"hf: {shown}/{name} is not JSON") from None
    if not isinstance(obj, dict):
        raise DataProblem(f"hf: {shown}/{name} is not a JSON object")
    return obj


def _pick_column(given: str | None, features: dict[str, Any], feature_type: str, names: tuple[str, ...],
                 schema: Any, url: str, what: str) -> str:
    columns = list(schema.names)
    option = f"--{what}-column"
    if given is not None:
        if given not in columns:
            raise DataProblem(f"hf: {url} has no column {given!r} ({option}; columns: {', '.join(columns)})")
        return given
    typed = [c for c in columns if isinstance(features.get(c), dict) and features[c].get("_type") == feature_type]
    if typed:
        return typed[0]
    for name in names:
        if name in columns:
            return name
    raise DataProblem(f"hf: {url}: which column holds the {what}s? none is a {feature_type} feature or named "
                      f"{'/'.join(names[:3])}; give {option} (columns: {', '.join(columns)})")


def _hf_class_names(feature: Any, tables: dict[str, Any], column: str, url: str) -> tuple[str, ...]:
    import pyarrow as pa

    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
        names = feature.get("names")
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return tuple(names)
        k = feature.get("num_classes")
        if isinstance(k, int) and k > 0:
            return tuple(str(i) for i in range(k))
    col = tables["train"].column(column)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return tuple(sorted({v for v in col.to_pylist() if v is not None}))
    if not pa.types.is_integer(col.type):
        raise DataProblem(f"hf: {url}: label column {column!r} holds {col.type}, not integers or class names")
    values = [v for v in col.to_pylist() if v is not None]
    return tuple(str(i) for i in range(max(values) + 1 if values else 0))


def _hf_labels(col: Any, index: dict[str, int], names: tuple[str, ...], url: str, split: str,
               column: str) -> np.ndarray:
    import pyarrow as pa

    values = col.to_pylist()
    if None in values:
        raise DataProblem(f"hf: {url}: split {split} has rows without a {column!r} (row {values.index(None)})")
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        unknown = next((v for v in values if v not in index), None)
        if unknown is not None:
            raise DataProblem(f"hf: {url}: split {split} has label {unknown!r}, which no training row has")
        return np.array([index[v] for v in values], dtype=np.int64)
    if not pa.types.is_integer(col.type):
        raise DataProblem(f"hf: {url}: label column {column!r} holds {col.type}, not integers or class names")
    y = np.array(values, dtype=np.int64)
    k = len(names)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise DataProblem(f"hf: {url}: split {split} has label {bad}, out of range: labels must be 0..{k - 1} "
                          f"({k} classes)" + (" (-1 marks unlabelled rows)" if bad == -1 else ""))
    return y


def _hf_images(fs: Any, col: Any, labels: np.ndarray, url: str, split: str, column: str) -> Part:
    import pyarrow as pa

    kind = col.type
    where = f"{url.rstrip('/')}[{split}]"
    if pa.types.is_struct(kind) and {"bytes", "path"} <= {kind.field(i).name for i in range(kind.num_fields)}:
        blobs, names = [], []
        for row, value in enumerate(col.to_pylist()):
            value = value or {}
            data, path = value.get("bytes"), value.get("path")
            blobs.append(data)
            names.append(path if data is None and path else f"{where} row {row}")
            if data is None and not path:
                names[-1] = f"{where} row {row} (no image)"
        return Part(labels=labels, files=names, blobs=blobs)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        blobs = col.to_pylist()
        return Part(labels=labels, files=[f"{where} row {i}" for i in range(len(blobs))], blobs=blobs)
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
        try:
            x = np.array(col.to_pylist())
        except Exception as exc:
            raise DataProblem(f"hf: {where}: column {column!r} is not a regular array of pixels "
                              f"({one_line(exc)})") from None
        shown = f"{where} column {column!r}"
        return Part(labels=labels, arrays=as_nchw(x, shown, "hf", pixel_scale(x, shown, "hf")))
    raise DataProblem(f"hf: {url}: column {column!r} holds {kind}; expected images (an Image feature, "
                      "encoded bytes or arrays of pixels): give --image-column")


def _fetch_path(path: str) -> bytes:
    """An image an ``Image`` feature names by path only (not embedded in the dataset)."""
    import fsspec

    with fsspec.open(path, "rb") as f:
        return f.read()
