//! Entry points for the fuzzers in `fuzz/` and for the regression test that replays their corpus
//! (`tests/fuzz_regressions.rs`). Each takes arbitrary bytes and must return without panicking,
//! whatever the bytes are; errors are expected and ignored.

use std::path::Path;

/// The safetensors header parser, fed a whole file's bytes.
pub fn safetensors_file(data: &[u8]) {
    let path = Path::new("fuzz.safetensors");
    let Some(len_bytes) = data.get(..8) else {
        return;
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8]));
    let Some(end) = header_len
        .checked_add(8)
        .filter(|&e| e <= data.len() as u64)
    else {
        return;
    };
    let header = &data[8..end as usize];
    let _ = crate::checkpoint::safetensors::SafetensorsFile::parse_header(
        path,
        header,
        end,
        data.len() as u64,
    );
}

/// The `model.safetensors.index.json` parser.
pub fn hf_index(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::checkpoint::hf::parse_index(Path::new("fuzz.index.json"), text);
    }
}

/// `config.json` into the architecture description, then the parameter counts and config surgery
/// that depend on it.
pub fn config_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(arch) = crate::arch::ArchConfig::from_value(&value) else {
        return;
    };
    // Keep the work bounded: huge layer counts are valid JSON but not worth walking.
    if arch.num_hidden_layers > 4096 {
        return;
    }
    let counts = crate::arch::ParamCounts::from_config(&arch);
    let _ = counts.total();
    let spec = crate::select::LayerSpec::parse("0").ok();
    if let Some(r) =
        spec.and_then(|s| crate::select::Removal::drop(&s, arch.num_hidden_layers).ok())
    {
        let _ = crate::checkpoint::config_surgery::prune_config(&value, &arch, &r, None);
    }
}

/// The layer SPEC grammar: the first byte picks a layer count, the rest is the spec.
pub fn layer_spec(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if let Ok(spec) = crate::select::LayerSpec::parse(text) {
        if let Ok(r) = crate::select::Removal::drop(&spec, n as usize) {
            let _ = (r.summary(), r.drop_spec());
        }
        let _ = crate::select::Removal::keep(&spec, n as usize);
    }
}

/// The GGUF header reader, fed a whole file's bytes (seeds: `tests/fixtures/gguf/*.gguf`). A
/// file that reads must also survive the model-level checks `inspect` runs on it.
pub fn gguf_header(data: &[u8]) {
    if let Ok(file) = crate::checkpoint::gguf::GgufFile::from_bytes(Path::new("fuzz.gguf"), data) {
        for t in &file.tensors {
            let _ = (t.n_elements(), t.ggml_type().name());
        }
        for (k, v) in file.metadata.iter() {
            let _ = crate::checkpoint::gguf::info::MetaEntry::of(k, v);
        }
    }
}

/// The tokenizer-from-GGUF builder. The input is split on NUL bytes into a pre-tokenizer name,
/// a newline-separated token list, a newline-separated merge list and a chat template; the first
/// byte picks the tokenizer model and flags.
pub fn gguf_vocab(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest
        .split(|&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let pre = parts.next().filter(|p| !p.is_empty());
    let tokens: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .split('\n')
        .map(String::from)
        .collect();
    let merges: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .split('\n')
        .filter(|m| !m.is_empty())
        .map(String::from)
        .collect();
    let n = tokens.len();
    let vocab = crate::tokenizer::GgufVocab {
        model: if flags & 1 == 0 {
            "gpt2".into()
        } else {
            "llama".into()
        },
        pre,
        scores: (flags & 2 != 0).then(|| (0..n).map(|i| -(i as f32)).collect()),
        token_type: (flags & 4 != 0).then(|| (0..n).map(|i| (i % 7) as i32).collect()),
        tokens,
        merges,
        bos_token_id: (flags & 8 != 0).then_some(u32::from(flags) % 5),
        eos_token_id: Some(u32::from(flags >> 4)),
        unk_token_id: None,
        padding_token_id: None,
        add_bos_token: Some(flags & 16 != 0),
        add_eos_token: None,
        add_space_prefix: Some(flags & 32 != 0),
        chat_template: parts.next(),
    };
    if let Ok(t) = crate::tokenizer::to_tokenizer_json(&vocab) {
        let _ = serde_json::to_vec(&t.json);
    }
    let _ = crate::tokenizer::tokenizer_config_json(&vocab);
}
