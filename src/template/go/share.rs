//! `{{define}}`s shared across the files of `templates/`: each file gets the
//! definitions of other files that it invokes (`{{template "name"}}`), directly or
//! through another definition, and no others, so a confdir of many files that each
//! define their own blocks does not copy every block into every file. A file's own
//! definition of a name wins; between other files, the first in name order.

use std::collections::{BTreeMap, BTreeSet};

use gotmpl::Template;
use gotmpl::parse::{ListNode, Node};

/// Every file's definitions, by name (the first file in name order wins).
pub(super) fn library<'t>(
    files: impl Iterator<Item = (&'t str, &'t Template)>,
) -> BTreeMap<String, ListNode> {
    let mut library = BTreeMap::new();
    for (file, template) in files {
        for define in template.templates() {
            if define != file
                && !library.contains_key(define)
                && let Some(tree) = template.lookup(define)
            {
                library.insert(define.to_string(), tree.clone());
            }
        }
    }
    library
}

/// `template` with the definitions of `library` it invokes and lacks.
pub(super) fn complete(mut template: Template, library: &BTreeMap<String, ListNode>) -> Template {
    let own: BTreeSet<String> = template.templates().iter().map(|s| s.to_string()).collect();
    let mut wanted = BTreeSet::new();
    for name in &own {
        if let Some(tree) = template.lookup(name) {
            invoked(tree, &mut wanted);
        }
    }
    let mut added = BTreeSet::new();
    while let Some(name) = wanted.pop_first() {
        if own.contains(&name) || !added.insert(name.clone()) {
            continue;
        }
        if let Some(tree) = library.get(&name) {
            invoked(tree, &mut wanted);
            template = template.add_parse_tree(&name, tree.clone());
        }
    }
    template
}

/// The names `tree` invokes with `{{template}}` (or `{{block}}`), at any depth.
fn invoked(tree: &ListNode, names: &mut BTreeSet<String>) {
    for node in &tree.nodes {
        match node {
            Node::Template(t) => {
                names.insert(t.name.to_string());
            }
            Node::List(list) => invoked(list, names),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                invoked(&b.body, names);
                if let Some(e) = &b.else_body {
                    invoked(e, names);
                }
            }
            Node::Define(d) => invoked(&d.body, names),
            Node::Text(_) | Node::Action(_) | Node::Break(_) | Node::Continue(_) => {}
        }
    }
}
