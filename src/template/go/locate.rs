//! Where in a template a failed render failed, as Go's text/template says it
//! (`name:line:col: executing "name" at <getv "/x">`). gotmpl (with the patch in
//! `vendor/gotmpl`) reports the innermost *action* that failed; Go points at the
//! failing *command*, which for most failures in a confd template is one of confd's
//! functions refusing its arguments inside that action (`{{base (getv "/x")}}`). So
//! each function records its name and arguments on this thread when it fails, and
//! the parse tree is searched for the call: the call of that function whose literal
//! arguments match, else the first call of it. Any other error is placed at its
//! action (`command_at`).

use std::cell::RefCell;
use std::sync::Arc;

use gotmpl::parse::{CommandNode, Expr, ListNode, Node, Number, PipeNode};
use gotmpl::{Value, ValueFunc};

use super::args::Result;

/// A function call that failed: the function's name and its arguments.
#[derive(Debug, Clone)]
pub(super) struct FailedCall {
    pub name: &'static str,
    pub args: Vec<Value>,
}

thread_local! {
    static FAILED: RefCell<Option<FailedCall>> = const { RefCell::new(None) };
}

/// `f` as a gotmpl function that records its failures for [`take_failed`].
pub(super) fn recorded(name: &'static str, f: fn(&[Value]) -> Result<Value>) -> ValueFunc {
    Arc::new(move |args: &[Value]| {
        f(args).inspect_err(|_| {
            FAILED.with(|c| {
                *c.borrow_mut() = Some(FailedCall {
                    name,
                    args: args.to_vec(),
                });
            });
        })
    })
}

/// Forgets any failure recorded by an earlier render on this thread.
pub(super) fn clear() {
    FAILED.with(|c| c.borrow_mut().take());
}

/// The failure recorded by the render that just ended on this thread.
pub(super) fn take_failed() -> Option<FailedCall> {
    FAILED.with(|c| c.borrow_mut().take())
}

/// A call found in a tree: its byte offset in the source, and its text as Go
/// prints a command (`getv "/db/host"`).
pub(super) struct Found {
    pub offset: usize,
    pub text: String,
}

/// The call `failed` made, searched in `tree`.
pub(super) fn find(tree: &ListNode, failed: &FailedCall) -> Option<Found> {
    let mut calls = Vec::new();
    walk_list(tree, failed.name, &mut calls);
    let (offset, args) = calls
        .iter()
        .find(|call| literals_match(call.1, &failed.args))
        .or(calls.first())?;
    let mut text = failed.name.to_string();
    for arg in *args {
        text.push(' ');
        text.push_str(&expr_text(arg));
    }
    Some(Found {
        offset: *offset,
        text,
    })
}

/// The text of the command that starts at byte `offset` in `tree` (gotmpl's `At`
/// points at an action's first command).
pub(super) fn command_at(tree: &ListNode, offset: usize) -> Option<String> {
    let mut commands = Vec::new();
    commands_of_list(tree, &mut commands);
    commands
        .into_iter()
        .find(|c| c.pos.offset == offset)
        .map(|c| c.args.iter().map(expr_text).collect::<Vec<_>>().join(" "))
}

fn commands_of_list<'t>(list: &'t ListNode, out: &mut Vec<&'t CommandNode>) {
    for node in &list.nodes {
        match node {
            Node::List(l) => commands_of_list(l, out),
            Node::Action(a) => out.extend(&a.pipe.commands),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                out.extend(&b.pipe.commands);
                commands_of_list(&b.body, out);
                if let Some(e) = &b.else_body {
                    commands_of_list(e, out);
                }
            }
            Node::Template(t) => out.extend(t.pipe.iter().flat_map(|p| &p.commands)),
            Node::Define(d) => commands_of_list(&d.body, out),
            Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
        }
    }
}

/// Line (1-based) and column of byte `offset` in `source`, the column counted as Go's
/// text/template counts it: bytes since the line's start, from 0.
pub(super) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1);
    (line, col)
}

/// An argument as Go's parse tree prints it.
fn expr_text(expr: &Expr) -> String {
    match expr {
        Expr::Dot(_) => ".".into(),
        Expr::Field(_, fields) => fields.iter().map(|f| format!(".{f}")).collect(),
        Expr::Variable(_, name, fields) => {
            let fields: String = fields.iter().map(|f| format!(".{f}")).collect();
            format!("{name}{fields}")
        }
        Expr::Identifier(_, name) => name.to_string(),
        Expr::String(_, s) => format!("{s:?}"),
        Expr::Number(_, Number::Int(n)) => n.to_string(),
        Expr::Number(_, Number::Uint(n)) => n.to_string(),
        Expr::Number(_, Number::Float(f)) => f.to_string(),
        Expr::Bool(_, b) => b.to_string(),
        Expr::Nil(_) => "nil".into(),
        Expr::Pipe(_, pipe) => {
            let commands: Vec<String> = pipe
                .commands
                .iter()
                .map(|c| c.args.iter().map(expr_text).collect::<Vec<_>>().join(" "))
                .collect();
            format!("({})", commands.join(" | "))
        }
        Expr::Chain(_, inner, fields) => {
            let fields: String = fields.iter().map(|f| format!(".{f}")).collect();
            format!("{}{fields}", expr_text(inner))
        }
    }
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// A call of the function in the tree: its offset and its argument expressions.
type Call<'t> = (usize, &'t [Expr]);

fn walk_list<'t>(list: &'t ListNode, name: &str, calls: &mut Vec<Call<'t>>) {
    for node in &list.nodes {
        walk_node(node, name, calls);
    }
}

fn walk_node<'t>(node: &'t Node, name: &str, calls: &mut Vec<Call<'t>>) {
    match node {
        Node::List(list) => walk_list(list, name, calls),
        Node::Action(action) => walk_pipe(&action.pipe, name, calls),
        Node::If(b) | Node::Range(b) | Node::With(b) => {
            walk_pipe(&b.pipe, name, calls);
            walk_list(&b.body, name, calls);
            if let Some(e) = &b.else_body {
                walk_list(e, name, calls);
            }
        }
        Node::Template(t) => {
            if let Some(pipe) = &t.pipe {
                walk_pipe(pipe, name, calls);
            }
        }
        Node::Define(d) => walk_list(&d.body, name, calls),
        Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
    }
}

fn walk_pipe<'t>(pipe: &'t PipeNode, name: &str, calls: &mut Vec<Call<'t>>) {
    for command in &pipe.commands {
        if let Some(head) = command.args.first()
            && is_call_of(head, name)
        {
            calls.push((head.pos().offset, &command.args[1..]));
        }
        for arg in &command.args {
            walk_expr(arg, name, calls);
        }
    }
}

fn walk_expr<'t>(expr: &'t Expr, name: &str, calls: &mut Vec<Call<'t>>) {
    match expr {
        Expr::Pipe(_, pipe) => walk_pipe(pipe, name, calls),
        Expr::Chain(_, inner, _) => walk_expr(inner, name, calls),
        _ => {}
    }
}

fn is_call_of(head: &Expr, name: &str) -> bool {
    match head {
        Expr::Identifier(_, id) => id.as_str() == name,
        Expr::Chain(_, inner, _) => is_call_of(inner, name),
        _ => false,
    }
}

/// Whether every literal argument equals the value passed (other arguments match
/// anything). A piped value is the last argument, so only the written ones count.
fn literals_match(exprs: &[Expr], args: &[Value]) -> bool {
    exprs.iter().zip(args).all(|(expr, arg)| match (expr, arg) {
        (Expr::String(_, s), Value::String(v)) => s == v,
        (Expr::Number(_, Number::Int(n)), Value::Int(v)) => n == v,
        (Expr::String(..) | Expr::Number(..), _) => false,
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_bytes_from_the_line_start_from_zero_as_go_does() {
        let source = "ab\ncd{{x}}\n";
        assert_eq!(line_col(source, 0), (1, 0));
        assert_eq!(line_col(source, 5), (2, 2));
        assert_eq!(line_col(source, 99), (3, 0));
    }
}
