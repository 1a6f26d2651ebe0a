//! Tables in `docs/` that are generated from the code: each lies between
//! `<!-- NAME:begin -->` and `<!-- NAME:end -->` markers and must equal what the code renders
//! today, so the documentation cannot drift from the registry. `DEPTHPRUNE_BLESS=1 cargo test
//! --test docs_tables` rewrites them.

use std::path::Path;

fn check_block(doc: &str, name: &str, rendered: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let begin = format!("<!-- {name}:begin -->\n");
    let end = format!("<!-- {name}:end -->");
    let start = text.find(&begin).expect("begin marker") + begin.len();
    let stop = start + text[start..].find(&end).expect("end marker");
    if std::env::var_os("DEPTHPRUNE_BLESS").is_some() {
        let new = format!("{}{}{}", &text[..start], rendered, &text[stop..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        &text[start..stop],
        rendered,
        "{doc}: the `{name}` table differs from the code; run DEPTHPRUNE_BLESS=1 cargo test --test docs_tables"
    );
}

#[test]
fn architectures_table_is_the_registry() {
    check_block(
        "docs/architectures.md",
        "registry",
        &depthprune::arch::registry::markdown_table(),
    );
}
