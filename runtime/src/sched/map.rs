//! Map expansion: the children of a map step, from the folder or the JSON
//! list it maps over. Pure apart from storing each item's one-entry folder
//! (the caller's `put`), so it is tested alone.

use crate::digest::Digest;
use crate::tree::{Entry, Tree};
use serde_json::Value;
use std::collections::BTreeMap;

/// One child of a map step: its label (the entry's name, or the item's
/// zero-padded index), its inputs and its params.
pub(crate) struct Child {
    pub(crate) label: String,
    pub(crate) inputs: BTreeMap<String, Digest>,
    pub(crate) params: Value,
}

/// A child per entry of the folder mapped over, in the folder's order: the
/// map step's `inputs` plus `item`, a folder holding that entry alone
/// (stored by `put`), and the map step's `params`.
pub(crate) fn over_folder<E>(
    entries: Vec<Entry>,
    inputs: &BTreeMap<String, Digest>,
    params: &Value,
    mut put: impl FnMut(&Tree) -> Result<Digest, E>,
) -> Result<Vec<Child>, E> {
    let mut children = Vec::with_capacity(entries.len());
    for e in entries {
        let label = e.name.clone();
        let item = put(&Tree { entries: vec![e] })?;
        let mut inputs = inputs.clone();
        inputs.insert("item".into(), item);
        children.push(Child {
            label,
            inputs,
            params: params.clone(),
        });
    }
    Ok(children)
}

/// A child per value of the JSON list mapped over: the map step's `inputs`,
/// and its `params` plus `item` (the value) and `index`; labelled by the
/// index, zero-padded to the widest (`07` of 12), so labels sort as the list.
pub(crate) fn over_list(
    list: Vec<Value>,
    inputs: &BTreeMap<String, Digest>,
    params: &Value,
) -> Vec<Child> {
    let width = list.len().saturating_sub(1).to_string().len();
    list.into_iter()
        .enumerate()
        .map(|(k, v)| Child {
            label: format!("{k:0width$}"),
            inputs: inputs.clone(),
            params: list_params(params, v, k),
        })
        .collect()
}

/// The params of a list map's child `index`: the map step's `params` plus
/// `item` (the value) and `index`.
pub(crate) fn list_params(params: &Value, item: Value, index: usize) -> Value {
    let mut params = params.clone();
    if let Some(o) = params.as_object_mut() {
        o.insert("item".into(), item);
        o.insert("index".into(), index.into());
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::EntryKind;
    use serde_json::json;

    fn entry(name: &str, kind: EntryKind) -> Entry {
        Entry {
            name: name.into(),
            kind,
            digest: Digest::of(name.as_bytes()),
            bytes: 1,
        }
    }

    #[test]
    fn a_folder_gives_a_child_per_entry_with_that_entry_as_item() {
        let base = BTreeMap::from([("model".to_string(), Digest::of(b"m"))]);
        let mut stored = Vec::new();
        let children = over_folder(
            vec![
                entry("a.csv", EntryKind::File),
                entry("b", EntryKind::Folder),
            ],
            &base,
            &json!({"k": 1}),
            |t: &Tree| -> Result<Digest, ()> {
                stored.push(t.clone());
                Ok(Digest::of(&t.encode()))
            },
        )
        .unwrap();
        let labels: Vec<&str> = children.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["a.csv", "b"]);
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[1].entries[0].name, "b");
        for (c, t) in children.iter().zip(&stored) {
            assert_eq!(c.inputs["item"], Digest::of(&t.encode()));
            assert_eq!(c.inputs["model"], base["model"]);
            assert_eq!(c.params, json!({"k": 1}));
        }
    }

    #[test]
    fn a_failed_put_stops_the_expansion() {
        let e = over_folder(
            vec![entry("a", EntryKind::File)],
            &BTreeMap::new(),
            &json!({}),
            |_: &Tree| Err("disk full"),
        );
        assert_eq!(e.err(), Some("disk full"));
    }

    #[test]
    fn a_list_gives_a_child_per_value_labelled_by_padded_index() {
        let list: Vec<Value> = (0..12).map(|i| json!({"n": i})).collect();
        let children = over_list(list, &BTreeMap::new(), &json!({"lr": 0.1}));
        assert_eq!(children.len(), 12);
        assert_eq!(children[0].label, "00");
        assert_eq!(children[11].label, "11");
        assert_eq!(
            children[7].params,
            json!({"lr": 0.1, "item": {"n": 7}, "index": 7})
        );
        let one = over_list(vec![json!("x")], &BTreeMap::new(), &json!({}));
        assert_eq!(one[0].label, "0");
        assert!(over_list(Vec::new(), &BTreeMap::new(), &json!({})).is_empty());
    }
}
