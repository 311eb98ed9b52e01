//! Splitting PTX lines into statements and operands, and reading literals.

/// One statement of a kernel body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stmt<'a> {
    /// `{`: a register scope opens (inline asm).
    Open,
    Close,
    Label(&'a str),
    /// A directive or instruction, without its `;`.
    Text(&'a str),
}

/// The line without a `//` comment (outside string literals).
pub fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let mut in_str = false;
    for k in 0..b.len() {
        match b[k] {
            b'"' => in_str = !in_str,
            b'/' if !in_str && b.get(k + 1) == Some(&b'/') => return &line[..k],
            _ => {}
        }
    }
    line
}

/// A line's statements: braces, labels, and `;`-terminated (or line-ending) texts.
pub fn split_statements(line: &str) -> Vec<Stmt<'_>> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('{') {
            out.push(Stmt::Open);
            rest = r.trim_start();
            continue;
        }
        if let Some(r) = rest.strip_prefix('}') {
            out.push(Stmt::Close);
            rest = r.trim_start();
            continue;
        }
        // A label: identifier followed by ':' (not inside an instruction).
        let ident_end =
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '.')).unwrap_or(rest.len());
        if ident_end > 0 && rest[ident_end..].starts_with(':') && !rest.starts_with('.') {
            out.push(Stmt::Label(&rest[..ident_end]));
            rest = rest[ident_end + 1..].trim_start();
            continue;
        }
        if rest.starts_with(".loc") || rest.starts_with(".file") {
            out.push(Stmt::Text(rest));
            break;
        }
        // Up to ';' outside braces of a vector operand; a '}' closing a scope ends it too.
        let b = rest.as_bytes();
        let mut depth = 0i32;
        let mut end = b.len();
        let mut consumed = b.len();
        for (k, &c) in b.iter().enumerate() {
            match c {
                b'{' => depth += 1,
                b'}' if depth > 0 => depth -= 1,
                b'}' => {
                    end = k;
                    consumed = k;
                    break;
                }
                b';' if depth == 0 => {
                    end = k;
                    consumed = k + 1;
                    break;
                }
                _ => {}
            }
        }
        let text = rest[..end].trim();
        if !text.is_empty() {
            out.push(Stmt::Text(text));
        }
        rest = rest[consumed..].trim_start();
    }
    out
}

/// Operands separated by top-level commas (not inside `{}` or `[]`).
pub fn split_operands(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut depth = 0i32;
    let mut from = 0;
    for (k, &c) in b.iter().enumerate() {
        match c {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 => {
                out.push(s[from..k].trim());
                from = k + 1;
            }
            _ => {}
        }
    }
    let last = s[from..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

/// An immediate: decimal (maybe negative), hex `0x…`, `0f…` (f32 bits), `0d…` (f64 bits).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lit {
    Int(i128),
    F32(u32),
    F64(u64),
}

pub fn literal(t: &str) -> Option<Lit> {
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t),
    };
    let body = body.trim_end_matches('U');
    let first = body.as_bytes().first()?;
    if !first.is_ascii_digit() {
        return None;
    }
    if let Some(h) = body.strip_prefix("0f").or_else(|| body.strip_prefix("0F")) {
        if neg || h.len() != 8 {
            return None;
        }
        return u32::from_str_radix(h, 16).ok().map(Lit::F32);
    }
    if let Some(h) = body.strip_prefix("0d").or_else(|| body.strip_prefix("0D")) {
        if neg || h.len() != 16 {
            return None;
        }
        return u64::from_str_radix(h, 16).ok().map(Lit::F64);
    }
    let v = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i128::from_str_radix(h, 16).ok()?
    } else {
        body.parse::<i128>().ok()?
    };
    Some(Lit::Int(if neg { -v } else { v }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_of_inline_asm_scope() {
        let s = split_statements("{ .reg .u64 t; cvta.to.shared.u64 t, %rd79; cvt.u32.u64 %r194, t; }");
        assert_eq!(
            s,
            vec![
                Stmt::Open,
                Stmt::Text(".reg .u64 t"),
                Stmt::Text("cvta.to.shared.u64 t, %rd79"),
                Stmt::Text("cvt.u32.u64 %r194, t"),
                Stmt::Close
            ]
        );
        assert_eq!(split_statements("$L__BB0_2:"), vec![Stmt::Label("$L__BB0_2")]);
        assert_eq!(split_statements("mma.x {%f1, %f2}, {%r1};"), vec![Stmt::Text("mma.x {%f1, %f2}, {%r1}")]);
    }

    #[test]
    fn literals() {
        assert_eq!(literal("0f3F800000"), Some(Lit::F32(0x3F80_0000)));
        assert_eq!(literal("-16"), Some(Lit::Int(-16)));
        assert_eq!(literal("0xff"), Some(Lit::Int(255)));
        assert_eq!(literal("%r1"), None);
        assert_eq!(split_operands("%r1|%p2, [%rd1+4], {%r1, %r2}"), vec!["%r1|%p2", "[%rd1+4]", "{%r1, %r2}"]);
    }
}
