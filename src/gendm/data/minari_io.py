"""Minari's on-disk layout: the datasets root, ids, listing, metadata, ``save_dataset`` and ``load_dataset``.

A dataset on disk is a Minari dataset, so ``minari.load_dataset(id)`` reads what gendm writes::

    ROOT/<namespace>/<name>-vN/data/main_data.hdf5   episode_0 .. episode_{E-1}, each holding
                                                     observations (T+1 rows), actions, rewards,
                                                     terminations, truncations (T rows)
    ROOT/<namespace>/<name>-vN/data/metadata.json    Minari's bookkeeping + ``ds.metadata``

``ROOT`` is Minari's own (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``) unless ``root=`` is
given. ``save_dataset`` writes into a hidden temporary directory and renames it into place, so a crash
never leaves half a dataset; ``load_dataset`` reads the HDF5 file with h5py straight into
preallocated arrays (1M transitions in about a second, see BENCHMARKS.md) and validates them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

from gendm.core.errors import ConfigError, DataError, UnknownNameError, unknown_name
from gendm.data.dataset import OfflineDataset
from gendm.data.validation import check_contiguous
from gendm.data.validation import validate as validate_dataset  # load_dataset's ``validate`` flag shadows it

DATA_DIR, MAIN_FILE, METADATA_FILE = "data", "main_data.hdf5", "metadata.json"
NAMESPACE_FILE = "namespace_metadata.json"
# Minari's id grammar: (namespace/)name-vN, the namespace may itself contain slashes.
DATASET_ID_RE = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")
# metadata.json keys that describe the stored arrays; save_dataset always recomputes them.
_BOOKKEEPING = (
    "dataset_id",
    "total_episodes",
    "total_steps",
    "data_format",
    "jpeg_encoding",
    "observation_space",
    "action_space",
    "env_spec",
    "minari_version",
    "dataset_size",
)
_LIST_HINT = "List local datasets with `gendm data list`; create one with `gendm data collect`."
# Substitutions minari applies to a stored env_spec before EnvSpec.from_json (gymnasium 1.0 compatibility).
_SPEC_COMPAT = (
    ('"order_enforce": true,', ""),
    ('"apply_api_compatibility": false,', ""),
    ('"autoreset": false, ', ""),
)


# ----------------------------------------------------------------------------------------- paths
def dataset_root(root: str | Path | None = None) -> Path:
    """``root``, else Minari's: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def check_dataset_id(dataset_id: str) -> None:
    if not DATASET_ID_RE.match(dataset_id):
        raise ConfigError(
            f"Dataset id {dataset_id!r} is not of Minari's form namespace/name-vN "
            "(e.g. gendm/hopper/medium-v0)."
        )


def list_datasets(root: str | Path | None = None) -> list[str]:
    """Ids of the datasets under ``root`` (directories holding ``data/metadata.json``)."""
    base = dataset_root(root)
    if not base.is_dir():
        return []
    ids = []
    for meta in base.rglob(f"{DATA_DIR}/{METADATA_FILE}"):
        rel = meta.parent.parent.relative_to(base)
        if rel.parts and not any(p.startswith(".") for p in rel.parts):
            ids.append(rel.as_posix())
    return sorted(ids)


def resolve_dataset(name_or_path: str | Path, root: str | Path | None = None) -> Path:
    """The ``data`` directory of a dataset given by id (under ``root``) or by path."""
    path = Path(name_or_path)
    for candidate in (path / DATA_DIR, path):
        if (candidate / METADATA_FILE).is_file():
            return candidate
    name = str(name_or_path)
    candidate = dataset_root(root) / name / DATA_DIR
    if (candidate / METADATA_FILE).is_file():
        return candidate
    known = list_datasets(root)
    if not known:
        raise UnknownNameError(f"Unknown dataset {name!r}: {empty_root_message(root)}")
    raise unknown_name("dataset", name, known, f"Looked in {dataset_root(root)}. {_LIST_HINT}")


def empty_root_message(root: str | Path | None = None) -> str:
    """What to do when the datasets root holds no dataset (names the root and how it was chosen)."""
    base = dataset_root(root)
    how = "Minari's default"
    if root is not None:
        how = "--root"
    elif os.environ.get("MINARI_DATASETS_PATH"):
        how = "$MINARI_DATASETS_PATH"
    state = "holds no dataset" if base.is_dir() else "does not exist"
    return (
        f"the datasets root {base} (from {how}) {state}. Create a dataset with `gendm data collect --env "
        "ENV_ID --episodes N --out NAMESPACE/NAME-v0`, or point MINARI_DATASETS_PATH (or --root) at the "
        "directory that holds your datasets."
    )


# ------------------------------------------------------------------------------------------ save
def save_dataset(
    ds: OfflineDataset,
    dataset_id: str,
    root: str | Path | None = None,
    overwrite: bool = False,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
) -> Path:
    """Write ``ds`` as Minari dataset ``dataset_id`` under ``root``; return its directory.

    The spaces default to those stored in ``ds.metadata``, else the registered environment's.
    ``ds.metadata`` goes into ``metadata.json`` (JSON values only); ``ref_min_score`` and
    ``ref_max_score`` default to ``gendm.envs.references`` when the task has references.
    """
    import h5py
    import minari
    from minari.serialization import serialize_space

    import gendm
    from gendm.envs.references import reference

    check_dataset_id(dataset_id)
    final = dataset_root(root) / dataset_id
    if final.exists() and not overwrite:
        raise DataError(
            f"Dataset {dataset_id!r} already exists at {final}: pass overwrite=True (--overwrite) or bump "
            "the version (-v1)."
        )
    if observation_space is None or action_space is None:
        stored = ds.spaces()
        observation_space, action_space = observation_space or stored[0], action_space or stored[1]
    validate_dataset(ds, observation_space, action_space)
    check_contiguous(ds)
    observation_space, obs_dtype = _storage(
        observation_space, "observations", ds.observations, ds.next_observations
    )
    action_space, act_dtype = _storage(action_space, "actions", ds.actions)
    meta = {k: v for k, v in ds.metadata.items() if k not in _BOOKKEEPING and k != "path"}
    ref = reference(ds.env_id)
    if ref is not None:
        meta.setdefault("ref_min_score", ref.random_return)
        meta.setdefault("ref_max_score", ref.expert_return)
    meta = {k: v for k, v in meta.items() if v is not None}
    meta.setdefault("gendm_version", gendm.__version__)
    meta |= {
        "dataset_id": dataset_id,
        "env_id": ds.env_id,
        "total_episodes": ds.num_episodes,
        "total_steps": len(ds),
        "data_format": "hdf5",
        "jpeg_encoding": False,
        "observation_space": serialize_space(observation_space),
        "action_space": serialize_space(action_space),
        "minari_version": minari.__version__,
    }
    env_spec = _env_spec_json(ds)
    if env_spec is not None:
        meta["env_spec"] = env_spec
    try:
        json.dumps(meta)
    except TypeError as e:
        raise DataError(f"ds.metadata must hold JSON values only to be saved: {e}.") from e

    final.parent.mkdir(parents=True, exist_ok=True)
    _write_namespace_files(dataset_root(root), dataset_id)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        (tmp / DATA_DIR).mkdir(parents=True)
        with h5py.File(tmp / DATA_DIR / MAIN_FILE, "w", track_order=True) as f:
            _write_episodes(f, ds, obs_dtype, act_dtype)
        with open(tmp / DATA_DIR / MAIN_FILE, "rb+") as f:
            os.fsync(f.fileno())  # on disk before the rename publishes it
        meta["dataset_size"] = round((tmp / DATA_DIR / MAIN_FILE).stat().st_size / 1e6, 1)  # MB, as Minari
        with open(tmp / DATA_DIR / METADATA_FILE, "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _storage(space: gym.Space, name: str, *arrays: np.ndarray) -> tuple[gym.Space, np.dtype]:
    """(space to declare, dtype to write) for a field, so that metadata.json declares what is stored:
    a float Box takes the stored float dtype (gendm holds float32, also for a float64 environment);
    integer spaces (Discrete, integer Box) are written in the space's own dtype."""
    dtype = arrays[0].dtype
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        if dtype == space.dtype:
            return space, dtype
        with np.errstate(over="ignore"):  # a float64 bound beyond float32's range becomes +-inf
            low, high = space.low.astype(dtype), space.high.astype(dtype)
        return gym.spaces.Box(low, high, space.shape, dtype), dtype
    if not np.issubdtype(space.dtype, np.integer):
        return space, dtype
    limits = np.iinfo(space.dtype)
    for x in arrays:
        if x.size and (x.min() < limits.min or x.max() > limits.max):
            raise DataError(
                f"Field {name!r} holds values in [{x.min()}, {x.max()}], which do not fit the space {space} "
                f"({space.dtype}): the data was collected on a different environment."
            )
    return space, np.dtype(space.dtype)


def _env_spec_json(ds: OfflineDataset) -> str | None:
    """The env_spec to record: the dataset's own (a loaded dataset keeps its time limit and kwargs)
    when it describes ``ds.env_id``, else the registered spec of ``ds.env_id``."""
    own = ds.metadata.get("env_spec")
    parsed = parse_env_spec(own)
    if parsed is not None and parsed.id == ds.env_id:
        return own
    spec = gym.spec(ds.env_id) if ds.env_id in gym.registry else None
    if spec is None:
        return None
    try:
        return spec.to_json()
    except (TypeError, ValueError):  # a callable entry point or non-JSON kwargs: minari allows no env_spec
        return None


def _write_episodes(f: Any, ds: OfflineDataset, obs_dtype: np.dtype, act_dtype: np.dtype) -> None:
    for i, (s, e) in enumerate(zip(ds.episode_starts.tolist(), ds.episode_ends.tolist())):
        g = f.create_group(f"episode_{i}")
        g.attrs["id"] = i
        g.attrs["total_steps"] = e - s
        obs = np.concatenate([ds.observations[s:e], ds.next_observations[e - 1 : e]])
        g.create_dataset("observations", data=obs.astype(obs_dtype, copy=False))
        g.create_dataset("actions", data=ds.actions[s:e].astype(act_dtype, copy=False))
        g.create_dataset("rewards", data=ds.rewards[s:e])
        g.create_dataset("terminations", data=ds.terminations[s:e])
        g.create_dataset("truncations", data=ds.truncations[s:e])


def _write_namespace_files(root: Path, dataset_id: str) -> None:
    """Minari marks each namespace level with a namespace_metadata.json (its namespace API reads them)."""
    parts = dataset_id.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        path = root.joinpath(*parts[:i]) / NAMESPACE_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` onto ``final``. An existing ``final`` is first renamed to a hidden
    ``.NAME.old-*`` directory and deleted after the swap, so a crash never leaves a mix of old and new
    files (between the two renames, the old dataset is whole in that hidden directory)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------ load
def read_metadata(name_or_path: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """The ``metadata.json`` of a local dataset, without reading its arrays."""
    path = resolve_dataset(name_or_path, root) / METADATA_FILE
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise DataError(
            f"{path} is not readable JSON ({e}): the dataset is corrupt. Delete its directory and create it "
            "again (gendm data collect), or download it again."
        ) from e
    if not isinstance(meta, dict):
        raise DataError(f"{path} does not hold a JSON object: it is not a Minari metadata file.")
    return meta


def load_dataset(
    name_or_path: str | Path, root: str | Path | None = None, validate: bool = True
) -> OfflineDataset:
    """Read a local Minari dataset (any writer: gendm or minari itself) by id or by path, validated
    unless ``validate=False`` (then e.g. drop bad episodes and validate with ``gendm.data.validate``)."""
    import h5py
    from minari.serialization import deserialize_space

    data_dir = resolve_dataset(name_or_path, root)
    meta = read_metadata(data_dir)
    if meta.get("data_format", "hdf5") != "hdf5":
        raise DataError(
            f"{data_dir} is stored in Minari's {meta['data_format']!r} format; gendm reads 'hdf5'. Re-create "
            "it with data_format='hdf5', or convert it with minari."
        )
    try:
        obs_space = deserialize_space(meta["observation_space"])
        act_space = deserialize_space(meta["action_space"])
    except (KeyError, ValueError, TypeError, NotImplementedError) as e:
        raise DataError(f"{data_dir / METADATA_FILE} lacks a readable observation/action space: {e}.") from e
    for name, space in (("observations", obs_space), ("actions", act_space)):
        if not isinstance(space, gym.spaces.Box | gym.spaces.Discrete):
            raise DataError(
                f"{data_dir} stores {name} in a {type(space).__name__} space; gendm reads Box and Discrete "
                "spaces only. Load it with minari.load_dataset and flatten the data."
            )
    if meta.get("jpeg_encoding", True) and _is_image(obs_space):
        raise DataError(f"{data_dir} stores JPEG-encoded images; gendm reads raw arrays only.")
    path = data_dir / MAIN_FILE
    try:
        with h5py.File(path, "r") as f:
            arrays = _read_episodes(f, int(meta.get("total_episodes", -1)), obs_space, act_space, path)
    except DataError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise DataError(
            f"Could not read {path}: {e}. The file is truncated or corrupt: delete the dataset directory "
            f"{data_dir.parent} and create it again (or download it again)."
        ) from e
    if "total_steps" in meta and int(meta["total_steps"]) != len(arrays["rewards"]):
        raise DataError(
            f"{data_dir / METADATA_FILE} lists {meta['total_steps']} steps but {path} holds "
            f"{len(arrays['rewards'])}: the dataset is inconsistent; create it again."
        )
    env_id = metadata_env_id(meta) or ""
    ds = OfflineDataset(env_id=env_id, metadata=meta | {"path": str(data_dir.parent)}, **arrays)
    if validate:
        root_arg = f", root={str(root)!r}" if root is not None else ""
        call = f"gendm.data.load_dataset({str(name_or_path)!r}{root_arg}, validate=False)"
        validate_dataset(ds, obs_space, act_space, load_call=call)
    return ds


def _read_episodes(f: Any, total: int, obs_space: gym.Space, act_space: gym.Space, path: Path) -> dict:
    names = [k for k in f if k.startswith("episode_")]
    count = total if total >= 0 else len(names)
    missing = [f"episode_{i}" for i in range(count) if f"episode_{i}" not in f]
    if missing:
        raise DataError(
            f"{path} lacks {missing[0]} (metadata lists {count} episodes): the file is incomplete; create or "
            "download the dataset again."
        )
    groups = [f[f"episode_{i}"] for i in range(count)]
    lengths = np.array([g["rewards"].shape[0] for g in groups], dtype=np.int64)
    ends = np.cumsum(lengths)
    n = int(ends[-1]) if count else 0
    obs_dtype = np.float32 if _floating(obs_space) else np.int64 if _discrete(obs_space) else obs_space.dtype
    act_dtype = np.int64 if _discrete(act_space) else np.float32
    obs = np.empty((n, *obs_space.shape), obs_dtype)
    next_obs = np.empty_like(obs)
    out = {
        "actions": np.empty((n, *act_space.shape), act_dtype),
        "rewards": np.empty(n, np.float32),
        "terminations": np.empty(n, bool),
        "truncations": np.empty(n, bool),
    }
    start = 0
    for i, (g, end) in enumerate(zip(groups, ends.tolist())):
        o = g["observations"][()]
        if len(o) != end - start + 1:
            raise DataError(
                f"{path}: episode_{i} has {len(o)} observations for {end - start} steps; Minari stores T+1 "
                "observations per episode. The file is corrupt; create the dataset again."
            )
        obs[start:end], next_obs[start:end] = o[:-1], o[1:]
        for key, arr in out.items():
            arr[start:end] = g[key][()].reshape(arr[start:end].shape)
        start = end
    return {"observations": obs, "next_observations": next_obs, "episode_ends": ends} | out


def _floating(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating)


def _discrete(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Discrete)


def _is_image(space: gym.Space) -> bool:
    from minari.dataset.minari_storage import is_image_space

    return is_image_space(space)


def metadata_env_id(meta: dict[str, Any]) -> str | None:
    """The environment id of a dataset's metadata: gendm's ``env_id``, else the id in Minari's
    ``env_spec`` (datasets written by minari itself record only that)."""
    if meta.get("env_id"):
        return str(meta["env_id"])
    try:
        env_id = json.loads(meta.get("env_spec") or "null")
    except (json.JSONDecodeError, TypeError):
        return None
    env_id = env_id.get("id") if isinstance(env_id, dict) else None
    return str(env_id) if env_id else None


def parse_env_spec(env_spec: Any) -> EnvSpec | None:
    """An ``env_spec`` string of Minari's metadata as an EnvSpec (with minari's compatibility fixes);
    None when absent or unreadable."""
    if not isinstance(env_spec, str) or not env_spec:
        return None
    for old, new in _SPEC_COMPAT:
        env_spec = env_spec.replace(old, new)
    try:
        return EnvSpec.from_json(env_spec)
    except (ValueError, TypeError, KeyError, AttributeError, gym.error.Error):
        return None


def recorded_env_spec(meta: dict[str, Any]) -> tuple[EnvSpec, str] | None:
    """The environment a dataset records for evaluation, picked as minari's
    ``recover_environment(eval_env=True)`` does: ``eval_env_spec``, else ``env_spec``. Returns the spec
    and the metadata key it came from, or None when the metadata holds neither."""
    for key in ("eval_env_spec", "env_spec"):
        spec = parse_env_spec(meta.get(key))
        if spec is not None:
            return spec, key
    return None


__all__ = [
    "check_dataset_id",
    "dataset_root",
    "empty_root_message",
    "list_datasets",
    "load_dataset",
    "metadata_env_id",
    "parse_env_spec",
    "read_metadata",
    "recorded_env_spec",
    "resolve_dataset",
    "save_dataset",
]
