"""Embedding inputs and ids: formats, the input digest, checks and their messages.

No store is involved, so these run once (not per backend)."""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clusterstore.clustering.files import load_ids, open_source
from clusterstore.clustering.ids import as_ids, check_unique, derived_ids
from clusterstore.clustering.inputs import ArraySource, scan
from clusterstore.eventstore import InputError


def emb(n: int = 50, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error(fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------- formats and digest


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8", ">f4", ">f8"])
def test_npy_of_each_float_type_reads_back_and_digests_as_the_file(
    tmp_path: Path, dtype: str
) -> None:
    x = emb().astype(dtype)
    path = tmp_path / "x.npy"
    np.save(path, x)
    src = open_source(path)
    assert (src.n, src.dim) == x.shape
    got = np.concatenate([c.copy() for _, c, _ in src.chunks(0, chunk_rows=7)])
    np.testing.assert_array_equal(got, x.astype(np.float32))
    assert scan(src, chunk_rows=7).digest == sha(path)


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_member_digest_is_the_members_npy_bytes(tmp_path: Path, compressed: bool) -> None:
    x, other = emb(), emb(5, 2, seed=1)
    path = tmp_path / "x.npz"
    (np.savez_compressed if compressed else np.savez)(path, emb=x, other=other)
    src = open_source(path, "emb")
    assert src.label == "x.npz[emb]"
    with zipfile.ZipFile(path) as z:
        member = z.read("emb.npy")
    assert scan(src, chunk_rows=8).digest == hashlib.sha256(member).hexdigest()
    got = np.concatenate([c.copy() for _, c, _ in src.chunks(20, chunk_rows=8)])
    np.testing.assert_array_equal(got, x[16:])  # chunks start at 20's chunk (16)


def test_npz_with_one_array_needs_no_key(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    np.savez(path, vectors=emb())
    assert open_source(path).npz_key == "vectors"


def test_array_source_digest_is_what_np_save_writes() -> None:
    x = np.asfortranarray(emb(30, 5).astype(np.float16))
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x))
    assert scan(ArraySource(x), chunk_rows=4).digest == hashlib.sha256(buf.getvalue()).hexdigest()


def test_scan_collects_exactly_the_sample_rows(tmp_path: Path) -> None:
    x = emb(100, 4)
    rows = np.array([0, 5, 31, 32, 33, 99])
    got = scan(ArraySource(x), chunk_rows=32, sample_rows=rows).sample
    np.testing.assert_array_equal(got, x[rows])


# ---------------------------------------------------------------- input errors


def test_input_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    def save(name: str, arr: np.ndarray) -> Path:
        np.save(tmp_path / name, arr)
        return tmp_path / name

    assert (
        error(open_source, tmp_path / "missing.npy") == f"{tmp_path / 'missing.npy'}: no such file"
    )
    (tmp_path / "x.csv").write_text("1,2\n")
    assert error(open_source, tmp_path / "x.csv") == (
        "x.csv: unsupported input format; give a .npy, .npz or .parquet file"
    )
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    assert error(open_source, tmp_path / "junk.npy").startswith(
        "junk.npy is not a readable .npy array ("
    )
    assert error(open_source, save("i.npy", np.zeros((3, 2), dtype=np.int64))) == (
        "i.npy holds int64 values; embeddings must be float16, float32 or float64"
    )
    assert error(open_source, save("v.npy", np.zeros(3, dtype=np.float32))) == (
        "v.npy has shape (3,); embeddings must be a 2-D array (N x d)"
    )
    assert error(open_source, save("e.npy", np.zeros((0, 4), dtype=np.float32))) == (
        "e.npy holds no embeddings (0 rows)"
    )
    assert error(open_source, save("z.npy", np.zeros((4, 0), dtype=np.float32))) == (
        "z.npy has dimension 0; embeddings need at least one column"
    )
    assert error(open_source, save("f.npy", np.asfortranarray(emb(5, 3)))) == (
        "f.npy is stored column-major (Fortran order); save it row-major with "
        "np.save(path, np.ascontiguousarray(x))"
    )
    full = save("t.npy", emb(10, 4)).read_bytes()
    (tmp_path / "t.npy").write_bytes(full[:-5])
    assert error(open_source, tmp_path / "t.npy") == (
        f"t.npy is truncated: {len(full) - 5} bytes, but its header promises {len(full)}"
    )
    assert error(open_source, tmp_path / "i.npy", "emb") == (
        "i.npy is a .npy file; --npz-key only applies to .npz files"
    )


def test_npz_key_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, a=emb(), b=emb())
    assert (
        error(open_source, path) == "x.npz holds several arrays (a, b); choose one with --npz-key"
    )
    assert error(open_source, path, "c") == "x.npz has no array 'c' (it holds: a, b)"
    (tmp_path / "bad.npz").write_bytes(b"PK but not really")
    assert error(open_source, tmp_path / "bad.npz").startswith("bad.npz is not a .npz archive (")


@pytest.mark.parametrize(
    ("value", "dtype", "what"),
    [
        (np.nan, np.float32, "NaN"),
        (np.inf, np.float32, "infinity"),
        (-np.inf, np.float16, "infinity"),
        (1e300, np.float64, "a value outside the float32 range"),
    ],
)
def test_non_finite_values_name_the_row(value: float, dtype: type, what: str) -> None:
    x = emb(300, 4).astype(dtype)
    x[137, 2] = value
    message = error(scan, ArraySource(x, "emb.npy"), chunk_rows=64)
    assert message == f"emb.npy row 137 contains {what}; embeddings must be finite"


def test_all_zero_row_is_refused_only_for_spherical() -> None:
    x = emb(40, 3)
    x[33] = 0
    scan(ArraySource(x), chunk_rows=16)
    assert error(scan, ArraySource(x, "emb.npy"), chunk_rows=16, spherical=True) == (
        "emb.npy row 33 is all zeros; spherical (cosine) k-means cannot normalise it"
    )


# ---------------------------------------------------------------- ids


UUIDS = [uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % (1 << 128)) for i in range(1, 8)]


def as_uuids(ids: np.ndarray) -> list[uuid.UUID]:
    return [uuid.UUID(bytes=bytes(b)) for b in ids]


def test_ids_from_every_supported_layout(tmp_path: Path) -> None:
    n = len(UUIDS)
    raw = np.frombuffer(b"".join(u.bytes for u in UUIDS), dtype="V16")
    layouts = {
        "v16.npy": raw,
        "u8.npy": raw.view(np.uint8).reshape(n, 16),
        "canonical.npy": np.array([str(u) for u in UUIDS]),
        "hex.npy": np.array([u.hex.upper().encode() for u in UUIDS]),
    }
    for name, arr in layouts.items():
        np.save(tmp_path / name, arr)
        assert as_uuids(load_ids(tmp_path / name, n)) == UUIDS, name
    text = tmp_path / "ids.txt"
    text.write_text("".join(f"  {u}\r\n" for u in UUIDS) + "\n\n")
    assert as_uuids(load_ids(text, n)) == UUIDS


def test_id_errors(tmp_path: Path) -> None:
    text = tmp_path / "ids.txt"
    text.write_text(f"{UUIDS[0]}\n{UUIDS[1]}\nnot-a-uuid\n")
    assert error(load_ids, text, 3) == "ids.txt line 3: 'not-a-uuid' is not a UUID"
    text.write_text(f"{UUIDS[0]}\n\n{UUIDS[1]}\n")
    assert error(load_ids, text, 2) == "ids.txt line 2: is empty"
    text.write_text(f"{UUIDS[0]}\n{UUIDS[1]}\n")
    assert error(load_ids, text, 3) == "ids.txt holds 2 ids but the embeddings have 3 rows"
    text.write_text("".join(f"{u}\n" for u in [*UUIDS[:4], UUIDS[2], UUIDS[1]]))
    assert error(load_ids, text, 6) == (
        f"duplicate embedding id {UUIDS[2]} at rows 2 and 4 of ids.txt (lines 3 and 5); "
        "ids must be unique within a run"
    )
    np.save(tmp_path / "obj.npy", np.array([UUIDS[0]], dtype=object), allow_pickle=True)
    assert error(load_ids, tmp_path / "obj.npy", 1) == (
        "obj.npy holds Python objects; save the ids as 16-byte values or as strings "
        "(np.array(ids, dtype='U36'))"
    )
    np.save(tmp_path / "f.npy", np.zeros(3))
    assert error(load_ids, tmp_path / "f.npy", 3) == (
        "f.npy holds a 3 array of float64; ids must be 16-byte UUIDs (dtype V16 or N x 16 "
        "uint8) or UUID strings"
    )
    np.save(tmp_path / "s.npy", np.array([str(UUIDS[0]), "é"]))
    assert error(load_ids, tmp_path / "s.npy", 2) == "s.npy row 1: 'é' is not a UUID"


def test_duplicate_names_the_first_two_occurrences() -> None:
    ids = as_ids([str(u) for u in [UUIDS[0], UUIDS[1], UUIDS[3], UUIDS[1], UUIDS[3]]])
    assert error(check_unique, ids, "ids.npy") == (
        f"duplicate embedding id {UUIDS[1]} at rows 1 and 3 of ids.npy; "
        "ids must be unique within a run"
    )


def test_derived_ids_are_uuidv8_with_the_row_in_the_low_bits() -> None:
    digest = hashlib.sha256(b"input").hexdigest()
    ids = as_uuids(derived_ids(digest, 1000, 1003))
    assert [u.version for u in ids] == [8, 8, 8]
    assert [u.variant for u in ids] == [uuid.RFC_4122] * 3
    assert [u.int & ((1 << 62) - 1) for u in ids] == [1000, 1001, 1002]
    assert ids[0].bytes[:6] == bytes.fromhex(digest[:12])
    assert as_uuids(derived_ids(digest, 1001, 1002)) == ids[1:2]
    other = hashlib.sha256(b"other").hexdigest()
    assert as_uuids(derived_ids(other, 1000, 1001))[0] != ids[0]


# ---------------------------------------------------------------- magnitudes faiss can use


def test_row_norms_up_to_the_faiss_limit_pass_and_beyond_it_are_refused() -> None:
    """faiss's float32 squared distances overflow (it labels rows -1 or aborts) when a row's
    norm nears 2^63; rows just below MAX_ROW_NORM pass, rows at it are refused, by row."""
    from clusterstore.clustering.inputs import MAX_ROW_NORM, check_magnitudes

    x = emb(30, 4)
    unit = np.full(4, 0.5, dtype=np.float64)  # norm 1
    x[5] = (unit * MAX_ROW_NORM * 0.999).astype(np.float32)
    x[6] = -x[5]
    check_magnitudes("x", 0, x)
    scan(ArraySource(x), chunk_rows=7)
    x[21] = (unit * MAX_ROW_NORM).astype(np.float32)
    assert error(check_magnitudes, "x", 100, x).startswith("x row 121 has a norm of 4.61e+18;")
    assert error(scan, ArraySource(x), chunk_rows=7).startswith(
        "embeddings row 21 has a norm of 4.61e+18;"
    )
    # NaN and infinity keep their own message
    x[3, 0] = np.nan
    assert error(scan, ArraySource(x), chunk_rows=7) == (
        "embeddings row 3 contains NaN; embeddings must be finite"
    )


def test_rows_just_below_the_limit_cluster_without_faiss_failing() -> None:
    """The margin holds: opposite rows at 0.999 x MAX_ROW_NORM train and assign."""
    from clusterstore.clustering.inputs import MAX_ROW_NORM
    from clusterstore.clustering.kmeans import Assigner, train

    rng = np.random.default_rng(0)
    a = rng.standard_normal(64)
    a *= MAX_ROW_NORM * 0.999 / np.linalg.norm(a)
    x = np.concatenate([np.tile(a, (40, 1)), np.tile(-a, (40, 1)), rng.standard_normal((40, 64))])
    x = x.astype(np.float32)
    trained = train(x, 4, spherical=False, iterations=5, seed=1, threads=1)
    labels, dist = Assigner(trained.centroids, spherical=False, threads=1).assign(x.copy())
    assert labels.max() < 4 and np.isfinite(dist).all()
