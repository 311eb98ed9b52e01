//! PTX text → `ir::Module`. Line oriented, as NVRTC writes PTX: module directives, then per
//! kernel its signature, performance directives and a `{ … }` body. The body is decoded in two
//! passes (labels to instruction indices, then instructions); every opcode and modifier is
//! checked against the forms the executor implements, so an unknown one is an error here and not
//! a silent misexecution later.

use crate::error::{EmuError, Result};
use crate::ir::*;

mod inst;
mod lex;

use lex::{Stmt, split_statements, strip_comment};

/// A `.shared` (or `.local`) variable: its name, bytes and alignment.
#[derive(Clone, Debug)]
pub(crate) struct Var {
    pub name: String,
    pub size: u32,
    pub align: u32,
    pub is_extern: bool,
}

pub fn parse(ptx: &str) -> Result<Module> {
    let lines: Vec<&str> = ptx.lines().collect();
    let mut files: Vec<(u32, String)> = Vec::new();
    let mut module_shared: Vec<Var> = Vec::new();
    let mut module_globals: Vec<String> = Vec::new();
    let mut kernels: Vec<Kernel> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let ln = (i + 1) as u32;
        let line = strip_comment(lines[i]).trim();
        i += 1;
        if line.is_empty() {
            continue;
        }
        let err = |m: String| EmuError::Parse { kernel: String::new(), ptx_line: ln, message: m };
        let first = line.split_whitespace().next().unwrap_or("");
        match first {
            ".version" | ".target" | ".address_size" => {}
            ".file" => {
                let mut it = line[5..].trim().splitn(2, char::is_whitespace);
                let id =
                    it.next().and_then(|t| t.parse::<u32>().ok()).ok_or_else(|| err(format!("bad .file: {line}")))?;
                let rest = it.next().unwrap_or("");
                let name = rest.split('"').nth(1).unwrap_or(rest).to_string();
                files.push((id, name));
            }
            ".section" => {
                // Debug sections: skip to the closing brace.
                let mut depth = line.matches('{').count() as i32 - line.matches('}').count() as i32;
                let mut opened = depth > 0;
                while i < lines.len() && (!opened || depth > 0) {
                    let l = strip_comment(lines[i]);
                    depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                    opened |= l.contains('{');
                    i += 1;
                }
            }
            ".shared" | ".extern" => {
                module_shared.push(parse_var(line, ".shared").map_err(err)?);
            }
            ".global" | ".const" => {
                // Module variables (NVRTC emits `constexpr` members this way). Kernels that name
                // one are rejected when decoded: they would need device memory of their own.
                let decl = line.split('=').next().unwrap_or(line).trim();
                module_globals.push(parse_var(decl, first).map_err(err)?.name);
            }
            ".visible" | ".entry" | ".weak" => {
                if !line.contains(".entry") {
                    return Err(err(format!("unsupported module directive: {line}")));
                }
                let (k, next) = parse_kernel(&lines, i - 1, &module_shared, &module_globals)?;
                kernels.push(k);
                i = next;
            }
            _ => return Err(err(format!("unsupported module directive: {line}"))),
        }
    }
    // NVRTC writes the `.file` table after the kernels.
    for k in &mut kernels {
        k.files = files.clone();
    }
    Ok(Module { kernels })
}

/// `.shared .align 16 .b8 name[8448];`, `.extern .shared .align 128 .b8 name[];`,
/// `.shared .align 1 .u8 name;`, `.local .align 16 .b8 __local_depot3[144];`.
pub(crate) fn parse_var(line: &str, space: &str) -> std::result::Result<Var, String> {
    let body = line.trim_end_matches(';');
    let toks: Vec<&str> = body.split_whitespace().collect();
    let mut align = 0;
    let mut elem = 0;
    let mut is_extern = false;
    let mut name_tok = None;
    let mut k = 0;
    while k < toks.len() {
        let t = toks[k];
        match t {
            ".extern" => is_extern = true,
            ".align" => {
                k += 1;
                align = toks.get(k).and_then(|v| v.parse().ok()).ok_or(format!("bad .align: {line}"))?;
            }
            _ if t == space => {}
            _ if t.starts_with('.') => {
                elem = type_bytes(&t[1..]).ok_or(format!("unsupported variable type {t}: {line}"))?
            }
            _ => name_tok = Some(t),
        }
        k += 1;
    }
    let name_tok = name_tok.ok_or(format!("variable without a name: {line}"))?;
    if elem == 0 {
        return Err(format!("variable without a type: {line}"));
    }
    let (name, count) = match name_tok.find('[') {
        Some(p) => {
            let inner = name_tok[p + 1..].trim_end_matches(']');
            let n = if inner.is_empty() {
                0
            } else {
                inner.parse::<u32>().map_err(|_| format!("bad array size: {line}"))?
            };
            (&name_tok[..p], n)
        }
        None => (name_tok, 1),
    };
    if align == 0 {
        align = elem;
    }
    Ok(Var { name: name.to_string(), size: elem * count, align, is_extern })
}

pub(crate) fn type_bytes(t: &str) -> Option<u32> {
    Some(match t {
        "b8" | "u8" | "s8" => 1,
        "b16" | "u16" | "s16" | "f16" | "bf16" => 2,
        "b32" | "u32" | "s32" | "f32" | "tf32" => 4,
        "b64" | "u64" | "s64" | "f64" => 8,
        _ => return None,
    })
}

fn align_up(v: u32, a: u32) -> u32 {
    v.div_ceil(a.max(1)) * a.max(1)
}

/// Parses one kernel starting at line index `start` (the `.entry` line); returns it and the index
/// of the line after its body.
fn parse_kernel(
    lines: &[&str],
    start: usize,
    module_shared: &[Var],
    module_globals: &[String],
) -> Result<(Kernel, usize)> {
    let head = strip_comment(lines[start]);
    let name =
        head.split(".entry").nth(1).map(|s| s.split('(').next().unwrap_or("").trim().to_string()).unwrap_or_default();
    let perr = |ln: usize, m: String| EmuError::Parse { kernel: name.clone(), ptx_line: (ln + 1) as u32, message: m };
    // Parameters until ')'.
    let mut params = Vec::new();
    let mut i = start + 1;
    let mut offset = 0u32;
    if !head.contains(')') {
        loop {
            if i >= lines.len() {
                return Err(perr(start, "unterminated parameter list".into()));
            }
            let l = strip_comment(lines[i]).trim();
            i += 1;
            if l.starts_with(')') {
                break;
            }
            if l.is_empty() {
                continue;
            }
            let p = parse_param(l).map_err(|m| perr(i - 1, m))?;
            offset = align_up(offset, p.align);
            params.push(Param { offset, ..p });
            offset += params.last().map_or(0, |p| p.size);
        }
    }
    // Performance directives until '{'.
    let mut max_threads = None;
    loop {
        if i >= lines.len() {
            return Err(perr(start, "kernel without a body".into()));
        }
        let l = strip_comment(lines[i]).trim();
        i += 1;
        if l.is_empty() {
            continue;
        }
        if l == "{" {
            break;
        }
        let dir = l.split_whitespace().next().unwrap_or("");
        match dir {
            ".maxntid" | ".reqntid" => {
                let n: u32 = l[dir.len()..].split(',').map(|t| t.trim().parse::<u32>().unwrap_or(1)).product();
                max_threads = Some(n);
            }
            ".minnctapersm" | ".maxnreg" | ".maxclusterrank" | ".pragma" => {}
            _ => return Err(perr(i - 1, format!("unsupported kernel directive: {l}"))),
        }
    }
    // Body until the matching '}'.
    let mut depth = 1;
    let mut stmts: Vec<(u32, Stmt)> = Vec::new();
    while depth > 0 {
        if i >= lines.len() {
            return Err(perr(start, "unterminated kernel body".into()));
        }
        let l = strip_comment(lines[i]);
        let ln = (i + 1) as u32;
        i += 1;
        for s in split_statements(l) {
            match s {
                Stmt::Open => depth += 1,
                Stmt::Close => depth -= 1,
                _ => {}
            }
            if depth > 0 {
                stmts.push((ln, s));
            }
        }
    }
    let mut k = inst::Decoder::new(name.clone(), params, offset, max_threads, module_shared, &stmts)?;
    k.module_globals = module_globals;
    let kernel = k.run(&stmts)?;
    Ok((kernel, i))
}

/// `.param .u64 .ptr .align 1 name` / `.param .align 16 .b8 name[16]` / `.param .f32 name`.
fn parse_param(l: &str) -> std::result::Result<Param, String> {
    let l = l.trim_end_matches(',').trim();
    let toks: Vec<&str> = l.split_whitespace().collect();
    if toks.first() != Some(&".param") {
        return Err(format!("unsupported parameter: {l}"));
    }
    let mut align = 0;
    let mut elem = 0;
    let mut name = None;
    let mut k = 1;
    while k < toks.len() {
        let t = toks[k];
        match t {
            ".ptr" | ".global" | ".shared" | ".const" | ".local" => {}
            ".align" => {
                k += 1;
                align = toks.get(k).and_then(|v| v.parse().ok()).ok_or(format!("bad .align: {l}"))?;
            }
            _ if t.starts_with('.') => {
                elem = type_bytes(&t[1..]).ok_or(format!("unsupported parameter type {t}: {l}"))?
            }
            _ => name = Some(t),
        }
        k += 1;
    }
    let name = name.ok_or(format!("parameter without a name: {l}"))?;
    let (name, count) = match name.find('[') {
        Some(p) => (
            &name[..p],
            name[p + 1..].trim_end_matches(']').parse::<u32>().map_err(|_| format!("bad array size: {l}"))?,
        ),
        None => (name, 1),
    };
    if elem == 0 {
        return Err(format!("parameter without a type: {l}"));
    }
    // `.ptr .align 1` is the pointee's alignment; the parameter itself is aligned naturally.
    let natural = if count == 1 { elem } else { align.max(elem) };
    let align = if count == 1 { elem } else { natural };
    Ok(Param { name: name.to_string(), size: elem * count, align, offset: 0 })
}
