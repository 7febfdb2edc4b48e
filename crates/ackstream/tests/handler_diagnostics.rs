//! A handler with an argument that is not an extractor fails to compile with a readable message
//! (snapshots in `tests/ui/*.stderr`, for the pinned toolchain).

#[test]
fn non_extractor_arguments_get_readable_compiler_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
