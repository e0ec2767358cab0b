"""Per-document SAE codes of a whole corpus, pooled over tokens and stored sparsely.

Curation compares documents in SAE code space, so every document needs one vector. A document's
token codes are pooled two ways (mean and max over its text tokens) and only the top `top_l`
entries of each pooled vector are kept (indices and values), with the document ids beside them.
Encoding streams: each batch's rows are appended to .npy files on disk as they come, so memory
stays flat however large the corpus; loading memory-maps the arrays.

Under a launcher the processes encode contiguous shares of whole batches and the main process
writes the folder (which the others then read: the runs folder is on a filesystem they share).

Folder layout: meta.json (top_l, d_sae, sae identity, counts), doc_ids.txt (one id per line),
{mean,max}_{indices,values}.npy of shape [n_docs, top_l] (int32 / float32, values descending).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from finescope_nb import distributed
from finescope_nb.activations import ActivationConfig, capture, pool_per_document
from finescope_nb.artifacts import atomic_path
from finescope_nb.errors import FinescopeError
from finescope_nb.sae.layer_sae import LayerSAE

POOLINGS = ("mean", "max")


@dataclass
class PooledCodes:
    """Sparse pooled codes: for each pooling, [n_docs, top_l] feature indices and their values."""

    doc_ids: list[str]
    indices: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    d_sae: int
    top_l: int
    meta: dict

    def __len__(self) -> int:
        return len(self.doc_ids)

    def dense(self, pooling: str = "mean") -> np.ndarray:
        """[docs, d_sae] dense float32 matrix (entries beyond the top L are zero)."""
        if pooling not in POOLINGS:
            raise FinescopeError(f"Unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}.")
        idx, val = self.indices[pooling], self.values[pooling]
        out = np.zeros((len(idx), self.d_sae), dtype=np.float32)
        np.put_along_axis(out, np.asarray(idx, dtype=np.int64), np.asarray(val, dtype=np.float32), axis=1)
        return out

    @classmethod
    def load(cls, folder: str | Path) -> "PooledCodes":
        folder = Path(folder)
        if not (folder / "meta.json").is_file():
            raise FinescopeError(f"{str(folder)!r} holds no pooled codes (no meta.json); pass a folder written by encode_corpus.")
        meta = json.loads((folder / "meta.json").read_text())
        ids = (folder / "doc_ids.txt").read_text(encoding="utf-8").split("\n")[: meta["n_docs"]]
        arrays = {(p, kind): np.load(folder / f"{p}_{kind}.npy", mmap_mode="r") for p in POOLINGS for kind in ("indices", "values")}
        return cls(ids, {p: arrays[p, "indices"] for p in POOLINGS}, {p: arrays[p, "values"] for p in POOLINGS},
                   meta["d_sae"], meta["top_l"], meta)


class _RowWriter:
    """Appends rows to a raw file; `finish` turns it into a .npy of the final length."""

    def __init__(self, path: Path, dtype, width: int):
        self.path, self.dtype, self.width, self.rows = path, np.dtype(dtype), width, 0
        self.file = open(path.with_suffix(".raw"), "wb")

    def write(self, rows: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.rows += len(rows)

    def finish(self) -> None:
        self.file.close()
        raw = self.path.with_suffix(".raw")
        out = np.lib.format.open_memmap(self.path, mode="w+", dtype=self.dtype, shape=(self.rows, self.width))
        src = np.memmap(raw, dtype=self.dtype, mode="r", shape=(self.rows, self.width)) if self.rows else None
        step = 65536
        for start in range(0, self.rows, step):
            out[start:start + step] = src[start:start + step]
        out.flush()
        del out, src
        raw.unlink()


def _sparse_top(pooled: torch.Tensor, top_l: int) -> tuple[np.ndarray, np.ndarray]:
    values, indices = pooled.topk(top_l, dim=1)
    return indices.numpy().astype(np.int32), values.numpy().astype(np.float32)


def encode_corpus(sae: LayerSAE, model, tokenizer, texts: Iterable[str], doc_ids: Iterable, out_dir: str | Path,
                  top_l: int = 64, config: ActivationConfig | None = None, progress: bool = True,
                  total: int | None = None) -> PooledCodes:
    """Encode every text, pool per document, and write the sparse codes to `out_dir` (atomically).

    `texts` and `doc_ids` may be generators of equal length: nothing holds the corpus in memory.
    Under a launcher each process encodes its contiguous share of whole batches and the main process
    writes the rows of all of them in document order (there the texts are held as a list).
    """
    if not 1 <= top_l <= sae.d_sae:
        raise FinescopeError(f"top_l must be between 1 and the SAE width {sae.d_sae}, got {top_l}.")
    sae.check_model(model)
    config = config or sae.config.capture
    if not distributed.launched():
        return _write_codes(sae, out_dir, top_l, _pooled_rows(sae, model, tokenizer, texts, config, top_l, progress, total),
                            doc_ids)
    texts, doc_ids = list(texts), [str(i) for i in doc_ids]
    if len(texts) != len(doc_ids) or not texts:
        raise FinescopeError(f"There are {len(texts)} texts and {len(doc_ids)} doc_ids; pass one id per text, and at least one text.")
    _check_ids(doc_ids)
    mine = distributed.shard(len(texts), config.batch_size)
    local = list(_pooled_rows(sae, model, tokenizer, texts[mine.start:mine.stop], config, top_l, progress, len(mine))) if mine else []
    rows = distributed.gather_in_order(local)
    with distributed.main_only(None) as main:
        if main:
            _write_codes(sae, out_dir, top_l, rows, doc_ids)
    return PooledCodes.load(out_dir)


def _check_ids(doc_ids) -> None:
    bad = next((i for i in doc_ids if "\n" in i), None)
    if bad is not None:
        raise FinescopeError(f"Document id {bad!r} contains a newline; use ids without line breaks.")


def _pooled_rows(sae, model, tokenizer, texts, config, top_l, progress, total):
    """Per batch of documents: {(pooling, "indices"|"values"): [docs, top_l] array}."""
    for batch in capture(model, tokenizer, texts, sae.layer, config, progress=progress, total=total):
        rows = len(batch.tokens.doc_index)
        codes = sae.encode(batch.acts[sae.layer])
        local = batch.doc_index - batch.tokens.doc_index[0]
        pooled = dict(zip(POOLINGS, pool_per_document(codes, local, rows)))
        out = {}
        for p in POOLINGS:
            out[p, "indices"], out[p, "values"] = _sparse_top(pooled[p], top_l)
        yield out


def _write_codes(sae, out_dir, top_l: int, row_batches, doc_ids) -> PooledCodes:
    """Stream the row batches and their ids into the codes folder (atomically)."""
    id_iter = iter(doc_ids)
    n_docs = 0
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        writers = {(p, kind): _RowWriter(tmp / f"{p}_{kind}.npy", np.int32 if kind == "indices" else np.float32, top_l)
                   for p in POOLINGS for kind in ("indices", "values")}
        with open(tmp / "doc_ids.txt", "w", encoding="utf-8") as ids_file:
            for rows in row_batches:
                for key, writer in writers.items():
                    writer.write(rows[key])
                for _ in range(len(rows[POOLINGS[0], "indices"])):
                    doc_id = next(id_iter, None)
                    if doc_id is None:
                        raise FinescopeError(f"doc_ids ran out after {n_docs} ids but there are more texts; pass one id per text.")
                    text_id = str(doc_id)
                    _check_ids([text_id])
                    ids_file.write(text_id + "\n")
                    n_docs += 1
        if next(id_iter, None) is not None:
            raise FinescopeError(f"There are more doc_ids than texts ({n_docs} texts); pass one id per text.")
        for writer in writers.values():
            writer.finish()
        meta = {"n_docs": n_docs, "top_l": top_l, "d_sae": sae.d_sae, "layer": sae.layer, "poolings": list(POOLINGS),
                "model_identity": sae.model_identity, "sae_config_hash": sae.config.config_hash()}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return PooledCodes.load(out_dir)


def merge_codes(parts: list[PooledCodes], out_dir: str | Path) -> PooledCodes:
    """Concatenate the pooled codes of consecutive shards of one corpus into one folder (atomically)."""
    if not parts:
        raise FinescopeError("There are no shards to merge; encode at least one document.")
    first = parts[0]
    if any((p.top_l, p.d_sae) != (first.top_l, first.d_sae) for p in parts):
        raise FinescopeError("The shards were encoded with different SAEs or top_l; encode them again with one SAE.")
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for p in POOLINGS:
            np.save(tmp / f"{p}_indices.npy", np.concatenate([part.indices[p] for part in parts]))
            np.save(tmp / f"{p}_values.npy", np.concatenate([part.values[p] for part in parts]))
        ids = [i for part in parts for i in part.doc_ids]
        (tmp / "doc_ids.txt").write_text("".join(i + "\n" for i in ids), encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps({**first.meta, "n_docs": len(ids)}, indent=1) + "\n")
    return PooledCodes.load(out_dir)

