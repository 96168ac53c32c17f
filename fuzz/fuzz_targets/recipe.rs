//! Fuzzes the Dockerfile parser and planner: no layer may panic, and every span they report
//! must be a valid, char-aligned range of the input (the diagnostic renderer slices with them).
#![no_main]

use kiln_recipe::instruction::Kind;
use kiln_recipe::{Instruction, Span};
use libfuzzer_sys::fuzz_target;

fn check_span(text: &str, span: Span, what: &str) {
    assert!(
        span.start <= span.end && span.end <= text.len(),
        "{what}: span {}..{} out of range for text of {} bytes",
        span.start,
        span.end,
        text.len()
    );
    assert!(
        text.is_char_boundary(span.start) && text.is_char_boundary(span.end),
        "{what}: span {}..{} is not on char boundaries",
        span.start,
        span.end
    );
}

fn check_instruction(text: &str, instruction: &Instruction) {
    check_span(text, instruction.span, "instruction.span");
    check_span(text, instruction.keyword_span, "instruction.keyword_span");
    if let Kind::Onbuild(trigger) = &instruction.kind {
        check_instruction(text, trigger);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    let recipe = kiln_recipe::parse_recipe(text);
    for diagnostic in &recipe.diagnostics {
        check_span(text, diagnostic.span, &format!("diagnostic {:?}", diagnostic.message));
    }
    for instruction in &recipe.instructions {
        check_instruction(text, instruction);
    }

    // The planner expands words and reports with spans of its own; plan with build args and a
    // target so ARG scoping, pruning and target errors are exercised too.
    let options = kiln_plan::PlanOptions {
        build_args: [("A".to_string(), "1".to_string()), ("BASE".to_string(), "img".to_string())].into(),
        target: text.lines().last().map(|l| l.chars().take(8).collect()),
        ..kiln_plan::PlanOptions::default()
    };
    let plan = kiln_plan::plan(&recipe, &options);
    for diagnostic in &plan.diagnostics {
        check_span(text, diagnostic.span, &format!("plan diagnostic {:?}", diagnostic.message));
    }

    let document = kiln_recipe::parse(text);
    for diagnostic in &document.diagnostics {
        check_span(text, diagnostic.span, &format!("syntax diagnostic {:?}", diagnostic.message));
    }
    let _ = kiln_recipe::dump::dump(&document);
});
