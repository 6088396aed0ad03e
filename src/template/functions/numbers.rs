//! `seq` and confd's integer arithmetic (`add`, `sub`, `mul`, `div`, `mod`), with
//! errors where Go panicked or wrapped. Nothing here reads the store or the system.

use tera::{Error, Kwargs, State, Tera, TeraResult};

pub(super) fn register(tera: &mut Tera) {
    tera.register_function("seq", seq);
    tera.register_function("add", |kw: Kwargs, _: &State| {
        arithmetic(kw, "add", i64::checked_add)
    });
    tera.register_function("sub", |kw: Kwargs, _: &State| {
        arithmetic(kw, "sub", i64::checked_sub)
    });
    tera.register_function("mul", |kw: Kwargs, _: &State| {
        arithmetic(kw, "mul", i64::checked_mul)
    });
    tera.register_function("div", |kw: Kwargs, _: &State| {
        arithmetic(kw, "div", i64::checked_div)
    });
    tera.register_function("mod", |kw: Kwargs, _: &State| {
        arithmetic(kw, "mod", i64::checked_rem)
    });
}

/// More elements than any config needs; `seq` refuses larger ranges instead of
/// exhausting memory on a typo.
const MAX_SEQ_LEN: i64 = 1_000_000;

fn seq(kw: Kwargs, _: &State) -> TeraResult<Vec<i64>> {
    let start: i64 = kw.must_get("start")?;
    let end: i64 = kw.must_get("end")?;
    if start > end {
        return Ok(Vec::new());
    }
    if end.saturating_sub(start) >= MAX_SEQ_LEN {
        return Err(Error::message(format!(
            "seq: {start}..{end} has more than {MAX_SEQ_LEN} elements"
        )));
    }
    Ok((start..=end).collect())
}

/// confd's integer `add`/`sub`/`mul`/`div`/`mod`. `checked_*` turns division by zero
/// and overflow into an error where Go panicked (division) or wrapped (the rest).
fn arithmetic(kw: Kwargs, name: &str, op: fn(i64, i64) -> Option<i64>) -> TeraResult<i64> {
    let a: i64 = kw.must_get("a")?;
    let b: i64 = kw.must_get("b")?;
    op(a, b).ok_or_else(|| {
        let why = if b == 0 && matches!(name, "div" | "mod") {
            "division by zero"
        } else {
            "integer overflow"
        };
        Error::message(format!("{name}: {why} ({a}, {b})"))
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{render, render_err};

    #[test]
    fn seq_is_inclusive_and_empty_when_reversed() {
        assert_eq!(
            render(r#"{{ seq(start=1, end=3) | join(sep=",") }}"#),
            "1,2,3"
        );
        assert_eq!(render(r#"{{ seq(start=5, end=3) | length }}"#), "0");
        assert_eq!(
            render(r#"{{ seq(start=-1, end=-1) | join(sep=",") }}"#),
            "-1"
        );
        assert!(render_err(r#"{{ seq(start=0, end=100000000) }}"#).contains("seq:"));
    }

    #[test]
    fn arithmetic_matches_confd() {
        assert_eq!(
            render(r#"{{ add(a=1, b=2) }} {{ sub(a=1, b=2) }} {{ mul(a=3, b=4) }}"#),
            "3 -1 12"
        );
        assert_eq!(
            render(r#"{{ div(a=7, b=2) }} {{ mod(a=7, b=2) }} {{ div(a=-7, b=2) }}"#),
            "3 1 -3"
        );
        assert!(render_err(r#"{{ div(a=1, b=0) }}"#).contains("div: division by zero"));
        assert!(render_err(r#"{{ mod(a=1, b=0) }}"#).contains("mod: division by zero"));
        assert!(
            render_err(r#"{{ add(a=9223372036854775807, b=1) }}"#)
                .contains("add: integer overflow")
        );
    }
}
