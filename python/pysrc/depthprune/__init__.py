"""depthprune: depth pruning for decoder-only language models, from Python.

Score which transformer layers matter, remove whole layers, heal what the removal breaks and
measure what it cost, on Hugging Face safetensors folders and GGUF files, on the CPU, without
PyTorch. Every function is one call of the Rust library that the ``depthprune`` command line
also calls; keyword arguments are the command's flags with ``_`` for ``-`` (``calib_offset=``
for ``--calib-offset``), and results are the dicts its ``--json`` prints.

Every call that opens a model also takes the run options ``compute=`` (``"auto"``, ``"f32"``,
``"bf16"``), ``threads=`` and ``follow_symlinks=``; they apply to that call alone.

Layer numbers are 0-based and ranges are half-open: ``"3..29"`` removes layers 3 to 28.

Long calls release the GIL. Progress goes to ``callback(event, *args)`` when one is given
(events: ``start(label, total)``, ``advance(n)``, ``status(label, done, total, seconds,
seconds_left)`` at every tenth of a phase and at least every 20 s while it runs,
``message(text)``, ``finish()``, ``warning(text)``, and ``text(piece)`` while generating);
without one, each phase's start and end, its status lines and messages, and warnings go to
stderr.
Errors raise a subclass of :class:`Error` with the library's one-line message.

Example::

    import depthprune as dp
    s = dp.score("SmolLM2-135M", metric="bi", calib="train.txt", samples=8)
    drop = ",".join(map(str, s["chosen"]))
    dp.prune("SmolLM2-135M", drop=drop, out="smol-pruned", heal="auto",
             calib="train.txt", calib_offset=65536)
    print(dp.eval("smol-pruned", text="test.txt", ctx=512)["perplexity"])
"""

from __future__ import annotations

import json as _json
import math as _math
import os as _os
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as _np

from . import _native
from ._native import (
    ComputeError,
    ConfigError,
    CorruptFileError,
    Error,
    FileError,
    HubError,
    InvalidRequestError,
    LayerSpecError,
    StoppedError,
    TaskFileError,
    UnsupportedError,
)

__version__ = _native.version()

PathLike = Union[str, "_os.PathLike[str]"]
Callback = Callable[..., Any]

__all__ = [
    "inspect", "plan", "prune", "score", "heal", "eval", "doctor", "sweep", "generate", "report",
    "convert", "verify", "synth",
    "Error", "FileError", "CorruptFileError", "ConfigError", "TaskFileError", "LayerSpecError",
    "UnsupportedError", "InvalidRequestError", "HubError", "ComputeError", "StoppedError",
]


def _json_value(what: str, key: str, v: Any) -> Any:
    """``v`` as a JSON value (paths as strings), or an :class:`InvalidRequestError` naming
    ``key``: NaN and infinities are not numbers an option can take, and other objects have no
    JSON form."""
    if isinstance(v, _os.PathLike):
        return _os.fspath(v)
    if isinstance(v, (list, tuple)):
        return [_json_value(what, key, x) for x in v]
    if isinstance(v, float) and not _math.isfinite(v):
        raise InvalidRequestError(f"{what}: `{key}` is {v}; options take finite numbers")
    try:
        _json.dumps(v, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"{what}: `{key}` = {v!r} has no JSON form: {e}") from None
    return v


def _options(kwargs: Dict[str, Any], what: str = "options") -> str:
    """The keyword arguments as the JSON options object, paths as strings. ``None`` is sent as
    JSON null: an option that may be absent takes it as absent, and any other refuses it by
    name, so ``metric=None`` is an error rather than the default (only an omitted keyword gets
    the default)."""
    out = {k: None if v is None else _json_value(what, k, v) for k, v in kwargs.items()}
    return _json.dumps(out, allow_nan=False)


def _path(p: PathLike) -> str:
    return _os.fspath(p)


def _task_list(options: Dict[str, Any]) -> None:
    """``tasks=`` as the CLI's ``NAME=PATH,...``: from a dict of names to paths, or a list."""
    tasks = options.get("tasks")
    if isinstance(tasks, dict):
        options["tasks"] = ",".join(f"{k}={_path(v)}" for k, v in tasks.items())
    elif isinstance(tasks, (list, tuple)):
        options["tasks"] = ",".join(_path(t) for t in tasks)


def inspect(model: PathLike, *, exact: bool = False, callback: Optional[Callback] = None) -> dict:
    """Architecture, parameters by component, dtypes and bytes of a checkpoint.

    ``model`` is an HF folder, a ``config.json``, a ``.gguf`` file or a hub ID
    (``org/name[@revision]``). ``exact`` reads a hub checkpoint's shard headers to count
    parameters exactly. Returns the dict ``depthprune inspect --json`` prints.
    """
    return _json.loads(_native.inspect(_path(model), exact, callback))


def plan(model: PathLike, *, exact: bool = False, callback: Optional[Callback] = None, **options: Any) -> dict:
    """What a prune would produce, writing nothing.

    Name the layers with ``drop="3..29"`` or ``keep="0..3,29.."``, or choose them with
    ``strategy="bi", remove=8`` (also ``target_params=``, ``ratio=``, ``contiguous=``,
    ``protect=``, ``scores=`` and the calibration options of :func:`score`). Returns the dict
    ``depthprune plan --json`` prints: the removal as a list, as ranges and as the old → new
    mapping, parameters before and after, and the config changes.
    """
    return _json.loads(_native.plan(_path(model), _options(options, "plan"), exact, callback))


def prune(model: PathLike, *, out: PathLike, callback: Optional[Callback] = None, **options: Any) -> dict:
    """Removes layers and writes a new checkpoint to ``out`` (an HF folder or a ``.gguf``).

    Layers as for :func:`plan`. ``dtype="bf16"`` converts an HF checkpoint's floats,
    ``max_shard_size=`` (bytes) bounds its shards, ``force=True`` replaces an existing output.
    ``heal="auto"`` (or ``lstsq``, ``weighted``, ``scale``, ``cosine``, ``kd``) heals the result
    on ``calib=`` text, with the fit options of :func:`heal`. Returns the provenance
    (``pruning.json``) for an HF folder, or the GGUF prune's report.

    With ``heal=`` and an amount alone (``remove=8``, no ``drop``/``keep``/``strategy``) the
    layers are chosen heal-aware with finalists: the proxy's best sets (``finalists=3``, the
    beam width) and other criteria's sets are each healed and judged on held-out calibration
    windows, and the lowest next-token KL to the dense model wins (``method["finalists"]``
    records them; ``finalists=0`` keeps the proxy's first choice). ``time_budget=`` (seconds)
    is the whole call's: selection takes up to 40% of it and ``kd`` training the rest, e.g.
    ``prune(m, out=o, remove=8, heal="kd", calib=t, calib_offset=65536, time_budget=900)``.

    With ``heal=``, ``tasks={"arc_easy": path}`` (with ``limit=``, ``num_fewshot=``,
    ``max_gen_toks=``, ``confirm_run_unsafe_code=True``) scores the pruned model on each task
    before and after healing; the healing record's ``"tasks"`` holds both.
    """
    options["out"] = out
    _task_list(options)
    return _json.loads(_native.prune(_path(model), _options(options, "prune"), callback))


def score(model: PathLike, *, metric: str, callback: Optional[Callback] = None, **options: Any) -> dict:
    """Layer importance on calibration text.

    ``metric`` is ``angular``, ``bi``, ``minitron``, ``ppl``, ``greedy``, ``healed`` or ``last``.
    Options: ``calib=`` (the text file), ``ctx=512``, ``samples=16``, ``calib_offset=0``,
    ``tokens="last"|"all"``, ``max_block=``, ``batch=4``, ``offload=False``, ``steps=``
    (greedy), ``resamples=`` and ``choose=`` (stability), ``seed=``.

    Returns the dict ``depthprune score --json`` prints, with ``scores`` (a float64 numpy array,
    one value per layer; higher is more important), ``rank`` (an int64 array; 1 is removed
    first) and ``chosen`` (the ``choose`` layers the criterion removes first, a quarter of the
    layers by default).
    """
    options["metric"] = metric
    d = _json.loads(_native.score(_path(model), _options(options, "score"), callback))
    d["scores"] = _np.asarray(d["importance"], dtype=_np.float64)
    d["rank"] = _np.asarray(d["rank"], dtype=_np.int64)
    return d


def heal(
    pruned: PathLike,
    dense: PathLike,
    *,
    out: PathLike,
    dtype: Optional[str] = None,
    force: bool = False,
    callback: Optional[Callback] = None,
    **options: Any,
) -> dict:
    """Heals a checkpoint written by :func:`prune`, fitting on the ``dense`` model it came from.

    Options: ``calib=`` (required), ``method="auto"`` (or ``lstsq``, ``weighted``, ``scale``,
    ``cosine``, ``kd``), ``ctx=512``, ``calib_offset=0``, ``alpha=[1e-4, 1e-3, 1e-2, 1e-1]``,
    ``ridge="identity"|"zero"``, ``heal_samples=65536``, ``holdout=8``,
    ``maps="auto"|"per-block"|"per-layer"`` (``auto``: per-layer on Gemma 2/3 and OLMo 2,
    per-block elsewhere), and for ``kd`` ``steps=``, ``lr=``, ``kd_eval_every=``, ``patience=``,
    and ``offload=True`` (one layer of the dense model resident). ``dtype`` is the type of
    healed GGUF tensors (``f32`` or ``f16``). ``tasks=`` as for :func:`prune`.
    """
    _task_list(options)
    return _json.loads(
        _native.heal(_path(pruned), _path(dense), _options(options, "heal"), dtype, _path(out), force, callback)
    )


def eval(model: PathLike, *, callback: Optional[Callback] = None, **options: Any) -> dict:
    """Perplexity on ``text=`` (with ``ctx=512``, ``stride=``, ``max_tokens=``), and with
    ``reference=`` the KL divergence and top-1 agreement against that model; or benchmarks on
    ``tasks=``: lm-eval's tasks by name, their data fetched from the Hub into the HF cache
    (``["mmlu", "humaneval"]`` or ``"mmlu,humaneval"``) or given, ``{"mmlu": "mmlu/", "humaneval":
    "HumanEval.jsonl.gz"}`` (or the CLI's ``"mmlu=mmlu/,humaneval=..."``), with ``limit=``,
    ``num_fewshot=``, ``chat_template=True``, ``per_item=``; generation with ``samples=``,
    ``pass_k=``, ``temperature=``, ``max_gen_toks=``; HumanEval runs the model's code only with
    ``confirm_run_unsafe_code=True``. A single JSONL path is our own multiple-choice format.
    ``skip="20..28"`` skips layers as if pruned; ``offload=True`` keeps one layer resident.
    Returns the dict ``depthprune eval --json`` prints.
    """
    _task_list(options)
    return _json.loads(_native.eval(_path(model), _options(options, "eval"), callback))


def doctor(*, callback: Optional[Callback] = None, **options: Any) -> dict:
    """The machine report ``depthprune doctor --json`` prints: the CPU and its features, each
    core's measured peak rates (``peak_ms=150`` each), the kernels chosen on representative
    products (``no_kernels=True`` leaves them out), ``threads`` and memory; ``"line"`` is the
    one-line summary to print beside speed figures. ``kernel=`` forces a kernel.
    """
    return _json.loads(_native.doctor(_options(options, "doctor"), callback))


def sweep(model: PathLike, *, eval: PathLike, callback: Optional[Callback] = None, **options: Any) -> dict:
    """Every strategy at every number of layers removed, measured against the dense model.

    Options as ``depthprune sweep``: ``strategies=["angular", "bi", "ppl", "last"]``,
    ``remove="0..9"``, ``calib=``, ``eval_samples=8``, ``eval_offset=``, ``select_on=``,
    ``heal=["auto"]``, ``tasks=`` (lm-eval's tasks by name with their data, ``{"arc_easy": path,
    "humaneval": path}``, or one JSONL file of our own format; with ``limit=``,
    ``num_fewshot=``, ``chat_template=True``, ``max_gen_toks=``, and
    ``confirm_run_unsafe_code=True`` for HumanEval), ``out=`` (a folder for sweep.csv, plots and, with
    ``report=True``, report.md; nothing is written without it), and the calibration options of
    :func:`score`. Returns the dict ``sweep.json`` holds; its ``"rows"`` are ready for
    ``pandas.DataFrame`` (see :func:`rows`).

    Each finished cell is saved in ``out`` as it is measured; ``resume=True`` continues a study
    that was interrupted or killed, measuring only the missing cells, and ``force=True`` starts a
    study in ``out`` over.
    """
    options["eval"] = eval
    _task_list(options)
    if isinstance(options.get("strategies"), str):
        options["strategies"] = [options["strategies"]]
    if isinstance(options.get("heal"), str):
        options["heal"] = options["heal"].split(",")
    return _json.loads(_native.sweep(_path(model), _options(options, "sweep"), callback))


def rows(result: dict) -> "Any":
    """A sweep's rows, one per strategy and count, flattened (``measured.perplexity`` becomes
    ``perplexity``): a ``pandas.DataFrame`` when pandas is installed, else a list of dicts."""
    flat: List[dict] = []
    for r in result["rows"]:
        row = {}
        for k, v in r.items():
            if k == "measured" and isinstance(v, dict):
                row.update(v)
            elif k == "healed" and isinstance(v, dict):
                row.update({"healed_" + hk: hv for hk, hv in v.items()})
            else:
                row[k] = v
        flat.append(row)
    try:
        import pandas as pd  # noqa: PLC0415 (optional)
    except ImportError:
        return flat
    return pd.DataFrame(flat)


def generate(model: PathLike, prompt: str, *, callback: Optional[Callback] = None, **options: Any) -> dict:
    """Text from ``prompt`` with the KV cache; greedy unless ``temperature`` > 0.

    Options: ``chat=False`` (wrap the prompt in the chat template), ``max_new_tokens=128``,
    ``temperature=0``, ``top_p=1``, ``top_k=0``, ``seed=0``, ``skip="20..28"``,
    ``ignore_eos=False``, ``offload=False``. The text streams to ``callback("text", piece)``.
    Returns ``text``, ``tokens`` and timings.
    """
    options["prompt"] = prompt
    return _json.loads(_native.generate(_path(model), _options(options, "generate"), callback))


def convert(
    model: PathLike,
    *,
    to: str,
    out: PathLike,
    dtype: str = "f32",
    quant: Optional[str] = None,
    force: bool = False,
    callback: Optional[Callback] = None,
) -> dict:
    """Converts a ``.gguf`` file into an HF folder (``to="hf"``: config, safetensors, tokenizer)
    or an HF folder into a GGUF file (``to="gguf"``), written to ``out``.

    ``dtype`` is the output's tensor type (``f32``, ``f16`` or ``bf16``); quantized tensors are
    dequantized. ``quant`` (GGUF output only: ``"q4_k_m"``, ``"q4_0"`` or ``"q8_0"``) quantizes
    the matrix weights with llama.cpp's mix of that name instead. ``force=True`` replaces an existing output. Returns the dict
    ``depthprune convert --json`` prints: ``out``, ``tensors``, ``bytes`` and ``warnings``.
    """
    options = {"to": to, "out": out, "dtype": dtype, "quant": quant, "force": force}
    return _json.loads(_native.convert(_path(model), _options(options, "convert"), callback))


def verify(out: PathLike, *, source: Optional[PathLike] = None) -> dict:
    """Re-hashes a checkpoint written by :func:`prune` (an HF folder with ``pruning.json`` or a
    pruned ``.gguf``) and checks every tensor, against ``source`` (the model it was pruned from)
    when given: each kept tensor must be byte-identical to its source.

    Returns the dict ``depthprune verify --json`` prints: ``checks``, each with ``what``, ``ok``
    and ``detail``. A failed check is reported there, not raised (the command exits 1 on one);
    an unreadable checkpoint raises.
    """
    src = None if source is None else _path(source)
    return _json.loads(_native.verify(_path(out), src))


def synth(
    *,
    config: PathLike,
    out: PathLike,
    dtype: str = "bf16",
    max_shard_size: Union[int, str] = "5GB",
    seed: int = 0,
    callback: Optional[Callback] = None,
) -> str:
    """Writes a random-weight HF checkpoint of the shape ``config`` (a ``config.json``) describes
    to ``out`` (replaced if it exists), for tests and benchmarks, as ``depthprune synth`` does:
    the same ``seed`` gives the same bytes. ``dtype`` is ``f32``, ``f16`` or ``bf16``;
    ``max_shard_size`` is bytes or a size with units (``"500MB"``). Returns ``out``.
    """
    options = {
        "config": config,
        "out": out,
        "dtype": dtype,
        "max_shard_size": max_shard_size,
        "seed": seed,
    }
    return _json.loads(_native.synth(_options(options, "synth"), callback))


def report(dir: PathLike, *, callback: Optional[Callback] = None, **options: Any) -> str:
    """Writes ``report.md`` for a sweep folder (``k=``, ``pruned=[...]``, ``prompts=``,
    ``max_new_tokens=40``, ``text_note=``) and returns its path."""
    return _json.loads(_native.report(_path(dir), _options(options, "report"), callback))
