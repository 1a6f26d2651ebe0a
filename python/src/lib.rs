//! The Python face of depthprune: `depthprune._native`, which the `depthprune` package wraps.
//! Each function takes the model, the options as a JSON object (the keyword arguments, named as
//! the library's option keys) and an optional callback, runs one call of `depthprune::api`
//! without the GIL, and returns the result as the JSON the command line prints with `--json`.
//! Library errors become `depthprune.Error` subclasses carrying the same one-line message.

use depthprune::api::{self, ModelSource};
use depthprune::progress::{Meter, Progress};
use depthprune::Error as LibError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;

create_exception!(
    _native,
    Error,
    PyException,
    "Every error depthprune raises."
);
create_exception!(
    _native,
    FileError,
    Error,
    "A file could not be read or written."
);
create_exception!(
    _native,
    CorruptFileError,
    Error,
    "A file breaks the rules of its format."
);
create_exception!(
    _native,
    ConfigError,
    Error,
    "A config.json is missing a field or contradicts the tensors."
);
create_exception!(
    _native,
    TaskFileError,
    Error,
    "A task file record cannot be used."
);
create_exception!(
    _native,
    LayerSpecError,
    Error,
    "A layer SPEC cannot be parsed or resolved."
);
create_exception!(
    _native,
    UnsupportedError,
    Error,
    "Valid in principle, but not handled (an architecture, a dtype)."
);
create_exception!(
    _native,
    InvalidRequestError,
    Error,
    "A request that cannot be carried out as asked."
);
create_exception!(
    _native,
    HubError,
    Error,
    "A hub reference that cannot be resolved."
);
create_exception!(_native, ComputeError, Error, "A tensor computation failed.");
create_exception!(
    _native,
    StoppedError,
    Error,
    "A long job stopped on request after saving what it finished (resume it)."
);

/// The exception for a library error, with its message.
fn raise(e: LibError) -> PyErr {
    let msg = e.to_string();
    match e {
        LibError::Io { .. } => FileError::new_err(msg),
        LibError::Corrupt { .. } | LibError::Quant(_) | LibError::Vocab(_) => {
            CorruptFileError::new_err(msg)
        }
        LibError::Config { .. } => ConfigError::new_err(msg),
        LibError::Task { .. } => TaskFileError::new_err(msg),
        LibError::Spec { .. } => LayerSpecError::new_err(msg),
        LibError::Unsupported(_) => UnsupportedError::new_err(msg),
        LibError::Invalid(_) => InvalidRequestError::new_err(msg),
        LibError::Hub(_) => HubError::new_err(msg),
        LibError::Compute(_) => ComputeError::new_err(msg),
        LibError::Interrupted(_) => StoppedError::new_err(msg),
    }
}

/// Progress and warnings for Python: to `callback(event, *args)` when one is given, else lines
/// on stderr. Events: `("start", label, total)`, `("advance", n)`, `("status", label, done,
/// total, seconds, seconds_left)` at every tenth of a phase and at least every 20 s while it
/// runs (`seconds_left` is `None` until something is done), `("message", text)`, `("finish",)`,
/// `("warning", text)`, `("text", piece)`. Without a callback, each phase's start and end, its
/// status lines and messages, and warnings go to stderr.
struct Callback(Option<Py<PyAny>>, std::sync::Mutex<Option<Meter>>);

impl Callback {
    fn new(cb: Option<Py<PyAny>>) -> Self {
        Callback(cb, std::sync::Mutex::new(None))
    }
}

/// One callback's arguments after the event name.
enum Args<'a> {
    None,
    Text(&'a str),
    Count(u64),
    Phase(&'a str, u64),
    Status(&'a str, u64, u64, f64, Option<f64>),
}

impl Callback {
    fn send(&self, event: &str, args: Args<'_>) {
        let Some(cb) = &self.0 else { return };
        Python::attach(|py| {
            let r = match args {
                Args::None => cb.call1(py, (event,)),
                Args::Text(t) => cb.call1(py, (event, t)),
                Args::Count(n) => cb.call1(py, (event, n)),
                Args::Phase(label, total) => cb.call1(py, (event, label, total)),
                Args::Status(label, done, total, secs, left) => {
                    cb.call1(py, (event, label, done, total, secs, left))
                }
            };
            if let Err(e) = r {
                e.print(py);
            }
        });
    }
}

impl Progress for Callback {
    fn start(&self, label: &str, total: u64) {
        if self.0.is_none() {
            eprintln!("depthprune: {label} ({total})");
        }
        if let Ok(mut phase) = self.1.lock() {
            *phase = Some(Meter::new(label, total, false));
        }
        self.send("start", Args::Phase(label, total));
    }
    fn advance(&self, n: u64) {
        self.send("advance", Args::Count(n));
        let status = self.1.lock().ok().and_then(|mut p| {
            let m = p.as_mut()?;
            let line = m.advance(n)?;
            let (done, total) = m.position();
            Some((
                line,
                m.label().to_string(),
                done,
                total,
                m.elapsed(),
                m.left(),
            ))
        });
        if let Some((line, label, done, total, secs, left)) = status {
            match self.0 {
                Some(_) => self.send("status", Args::Status(&label, done, total, secs, left)),
                None => eprintln!("depthprune: {line}"),
            }
        }
    }
    fn step_done(&self, what: &str) {
        self.advance(1);
        self.message(what);
    }
    fn message(&self, msg: &str) {
        if self.0.is_none() {
            eprintln!("depthprune: {msg}");
        }
        if let Some(m) = self.1.lock().ok().as_mut().and_then(|p| p.as_mut()) {
            m.touched();
        }
        self.send("message", Args::Text(msg));
    }
    fn finish(&self) {
        if let Some(m) = self.1.lock().ok().and_then(|mut p| p.take()) {
            if self.0.is_none() {
                eprintln!("depthprune: {} done in {:.1} s", m.label(), m.elapsed());
            }
        }
        self.send("finish", Args::None);
    }
    fn warn(&self, msg: &str) {
        match self.0 {
            Some(_) => self.send("warning", Args::Text(msg)),
            None => eprintln!("warning: {msg}"),
        }
    }
}

/// Reads options from JSON, refusing keys that no option takes.
fn options<T: DeserializeOwned + Serialize>(json: &str, what: &str) -> PyResult<T> {
    let given: Value = serde_json::from_str(json)
        .map_err(|e| InvalidRequestError::new_err(format!("{what}: options are not JSON: {e}")))?;
    let parsed: T = serde_json::from_value(given.clone()).map_err(|e| {
        // Name the option at fault: the first key that fails on its own.
        let culprit = given.as_object().and_then(|o| {
            o.iter().find_map(|(k, v)| {
                let one = Value::Object([(k.clone(), v.clone())].into_iter().collect());
                serde_json::from_value::<T>(one).err().map(|_| k.clone())
            })
        });
        match culprit {
            // None is not a value: only an omitted keyword gets the default (issue 25).
            Some(k) if given.get(&k).is_some_and(Value::is_null) => InvalidRequestError::new_err(
                format!("{what}: `{k}` is None; leave the keyword out to get its default"),
            ),
            Some(k) => InvalidRequestError::new_err(format!("{what}: `{k}`: {e}")),
            None => InvalidRequestError::new_err(format!("{what}: {e}")),
        }
    })?;
    let unknown = api::unknown_keys(&given, &parsed);
    if !unknown.is_empty() {
        let known = serde_json::to_value(&parsed).unwrap_or_default();
        let names: Vec<&String> = known
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        return Err(InvalidRequestError::new_err(format!(
            "{what}: unknown option{} {}; expected some of {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            names
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(parsed)
}

fn to_json(v: &impl Serialize) -> PyResult<String> {
    serde_json::to_string(v).map_err(|e| ComputeError::new_err(e.to_string()))
}

/// Runs `f` without the GIL; a panic (a bug, whatever the input) becomes a [`ComputeError`]
/// rather than pyo3's `PanicException`, which is no `depthprune.Error`.
fn unwound<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, LibError> + Send) -> PyResult<T> {
    let r = py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    match r {
        Ok(r) => r.map_err(raise),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ComputeError::new_err(format!(
                "internal error (a bug in depthprune; please report it): {msg}"
            )))
        }
    }
}

/// Runs `f` without the GIL and returns its result as JSON.
fn detached<T: Serialize + Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, LibError> + Send,
) -> PyResult<String> {
    to_json(&unwound(py, f)?)
}

#[pyfunction]
#[pyo3(signature = (model, exact=false, callback=None))]
fn inspect(
    py: Python<'_>,
    model: PathBuf,
    exact: bool,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let cb = Callback::new(callback);
    detached(py, || {
        api::inspect::inspect(&ModelSource::new(model), exact, &cb)
    })
}

#[pyfunction]
#[pyo3(signature = (model, options, exact=false, callback=None))]
fn plan(
    py: Python<'_>,
    model: PathBuf,
    options: &str,
    exact: bool,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let choice: api::choose::LayerChoice = self::options(options, "plan")?;
    let cb = Callback::new(callback);
    detached(py, || {
        api::plan::plan(&ModelSource::new(model), &choice, exact, &cb).map(|p| p.report)
    })
}

#[pyfunction]
#[pyo3(signature = (model, options, callback=None))]
fn prune(
    py: Python<'_>,
    model: PathBuf,
    options: &str,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let mut req: api::prune::PruneRequest = self::options(options, "prune")?;
    if req.command.is_none() {
        req.command = Some(vec!["depthprune.prune(...)".into()]);
    }
    let cb = Callback::new(callback);
    detached(py, || {
        api::prune::prune(&ModelSource::new(model), &req, &cb).map(|o| o.pruned)
    })
}

#[pyfunction]
#[pyo3(signature = (model, options, callback=None))]
fn score(
    py: Python<'_>,
    model: PathBuf,
    options: &str,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let req: api::score::ScoreRequest = self::options(options, "score")?;
    let cb = Callback::new(callback);
    let report = unwound(py, || {
        api::score::score(&ModelSource::new(model), &req, &cb)
    })?;
    let chosen = report.chosen(req.choose).map_err(raise)?;
    let mut v = serde_json::to_value(&report).map_err(|e| ComputeError::new_err(e.to_string()))?;
    v["chosen"] = chosen.into();
    to_json(&v)
}

#[pyfunction]
#[pyo3(signature = (pruned, dense, options, dtype=None, out=None, force=false, callback=None))]
#[allow(clippy::too_many_arguments)]
fn heal(
    py: Python<'_>,
    pruned: PathBuf,
    dense: PathBuf,
    options: &str,
    dtype: Option<&str>,
    out: Option<PathBuf>,
    force: bool,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let req: api::heal::HealRequest = self::options(options, "heal")?;
    let ty = match dtype {
        None => None,
        Some("f32") => Some(depthprune::checkpoint::gguf::GgmlType::F32),
        Some("f16") => Some(depthprune::checkpoint::gguf::GgmlType::F16),
        Some(d) => {
            return Err(InvalidRequestError::new_err(format!(
                "`dtype` {d}: healed tensors are f32 or f16"
            )))
        }
    };
    let Some(out) = out else {
        return Err(InvalidRequestError::new_err(
            "heal needs an output path (`out`)",
        ));
    };
    let output = api::heal::Output {
        out,
        force,
        max_shard_size: None,
        command: vec!["depthprune.heal(...)".into()],
        resume: false,
    };
    let cb = Callback::new(callback);
    detached(py, || {
        api::heal::heal(&pruned, &ModelSource::new(dense), &req, ty, &output, &cb)
    })
}

#[pyfunction]
#[pyo3(signature = (model, options, callback=None))]
fn eval(
    py: Python<'_>,
    model: PathBuf,
    options: &str,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let req: api::eval::EvalRequest = self::options(options, "eval")?;
    let cb = Callback::new(callback);
    detached(py, || api::eval::eval(&ModelSource::new(model), &req, &cb))
}

#[pyfunction]
#[pyo3(signature = (options, callback=None))]
fn doctor(py: Python<'_>, options: &str, callback: Option<Py<PyAny>>) -> PyResult<String> {
    let req: api::doctor::DoctorRequest = self::options(options, "doctor")?;
    let cb = Callback::new(callback);
    detached(py, || api::doctor::doctor(&req, &cb))
}

#[pyfunction]
#[pyo3(signature = (model, options, callback=None))]
fn sweep(
    py: Python<'_>,
    model: PathBuf,
    options: &str,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let req: api::sweep::SweepRequest = self::options(options, "sweep")?;
    let cb = Callback::new(callback);
    detached(py, || {
        api::sweep::sweep(&ModelSource::new(model), &req, &cb)
    })
}

#[pyfunction]
#[pyo3(signature = (model, options, callback=None))]
fn generate(
    py: Python<'_>,
    model: PathBuf,
    options: &str,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let req: api::generate::GenerateRequest = self::options(options, "generate")?;
    let cb = Callback::new(callback);
    detached(py, || {
        let mut on_text = |piece: &str| {
            cb.send("text", Args::Text(piece));
            Ok(())
        };
        api::generate::generate(&ModelSource::new(model), &req, &mut on_text, &cb)
    })
}

#[pyfunction]
#[pyo3(signature = (dir, options, callback=None))]
fn report(
    py: Python<'_>,
    dir: PathBuf,
    options: &str,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let req: api::report::ReportRequest = self::options(options, "report")?;
    let cb = Callback::new(callback);
    detached(py, || api::report::report(&dir, &req, &cb))
}

/// What `convert` takes besides the model: the keywords of `depthprune.convert`. Every field
/// may be absent here, so that a bad value is blamed on its own key; `to` and `out` are then
/// required by hand.
#[derive(Default, serde::Deserialize, Serialize)]
#[serde(default)]
struct ConvertOptions {
    to: Option<api::convert::Format>,
    out: Option<PathBuf>,
    dtype: Option<api::prune::FloatType>,
    quant: Option<depthprune::convert::quantize::QuantMix>,
    force: bool,
}

/// The value of a keyword that has no default.
fn required<T>(v: Option<T>, what: &str, key: &str) -> PyResult<T> {
    v.ok_or_else(|| InvalidRequestError::new_err(format!("{what}: `{key}` is required")))
}

#[pyfunction]
#[pyo3(signature = (model, options, callback=None))]
fn convert(
    py: Python<'_>,
    model: PathBuf,
    options: &str,
    callback: Option<Py<PyAny>>,
) -> PyResult<String> {
    let o: ConvertOptions = self::options(options, "convert")?;
    let req = api::convert::ConvertRequest {
        to: required(o.to, "convert", "to")?,
        out: required(o.out, "convert", "out")?,
        dtype: o.dtype.unwrap_or(api::prune::FloatType::F32),
        quant: o.quant,
        force: o.force,
    };
    let cb = Callback::new(callback);
    detached(py, || {
        let report = api::convert::convert(&model, &req, &cb)?;
        for w in &report.warnings {
            cb.warn(w);
        }
        Ok(report)
    })
}

#[pyfunction]
#[pyo3(signature = (out, source=None))]
fn verify(py: Python<'_>, out: PathBuf, source: Option<PathBuf>) -> PyResult<String> {
    use depthprune::checkpoint::verify::{verify_gguf, verify_hf};
    detached(py, || {
        if depthprune::model::is_gguf(&out) {
            verify_gguf(&out, source.as_deref())
        } else {
            verify_hf(&out, source.as_deref())
        }
    })
}

/// What `synth` takes: the keywords of `depthprune.synth` (all may be absent here, as for
/// [`ConvertOptions`]).
#[derive(Default, serde::Deserialize, Serialize)]
#[serde(default)]
struct SynthOptions {
    config: Option<PathBuf>,
    out: Option<PathBuf>,
    dtype: Option<api::prune::FloatType>,
    /// Bytes, or a size with units (`"500MB"`), as `--max-shard-size`.
    max_shard_size: Option<Value>,
    seed: u64,
}

#[pyfunction]
#[pyo3(signature = (options, callback=None))]
fn synth(py: Python<'_>, options: &str, callback: Option<Py<PyAny>>) -> PyResult<String> {
    let o: SynthOptions = self::options(options, "synth")?;
    let max_shard = match &o.max_shard_size {
        None => 5_000_000_000,
        Some(Value::String(s)) => depthprune::fmt::parse_size(s)
            .map_err(|e| InvalidRequestError::new_err(format!("synth: `max_shard_size`: {e}")))?,
        Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
            InvalidRequestError::new_err(format!(
                "synth: `max_shard_size` {v}: give a positive number of bytes or a size such as \"500MB\""
            ))
        })?,
    };
    let config = required(o.config, "synth", "config")?;
    let out = required(o.out, "synth", "out")?;
    let dtype = o.dtype.unwrap_or(api::prune::FloatType::Bf16);
    let cb = Callback::new(callback);
    detached(py, || {
        api::convert::synth(&config, &out, dtype, max_shard, o.seed, &cb)?;
        Ok(out.display().to_string())
    })
}

/// The library's version.
#[pyfunction]
fn version() -> &'static str {
    depthprune::VERSION
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    for (name, ty) in [
        ("Error", py.get_type::<Error>()),
        ("FileError", py.get_type::<FileError>()),
        ("CorruptFileError", py.get_type::<CorruptFileError>()),
        ("ConfigError", py.get_type::<ConfigError>()),
        ("TaskFileError", py.get_type::<TaskFileError>()),
        ("LayerSpecError", py.get_type::<LayerSpecError>()),
        ("UnsupportedError", py.get_type::<UnsupportedError>()),
        ("InvalidRequestError", py.get_type::<InvalidRequestError>()),
        ("StoppedError", py.get_type::<StoppedError>()),
        ("HubError", py.get_type::<HubError>()),
        ("ComputeError", py.get_type::<ComputeError>()),
    ] {
        m.add(name, ty)?;
    }
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(plan, m)?)?;
    m.add_function(wrap_pyfunction!(prune, m)?)?;
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(heal, m)?)?;
    m.add_function(wrap_pyfunction!(eval, m)?)?;
    m.add_function(wrap_pyfunction!(doctor, m)?)?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add_function(wrap_pyfunction!(generate, m)?)?;
    m.add_function(wrap_pyfunction!(report, m)?)?;
    m.add_function(wrap_pyfunction!(convert, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(synth, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
