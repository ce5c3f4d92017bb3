//! `application/x-www-form-urlencoded` bodies with bracketed keys
//! (`leads[add][0][custom_fields][1][values][0][value]=…`), as amoCRM and Bitrix24 post them.
//!
//! The body is turned into a tree once; parsers then walk it by key and every error names
//! the full bracketed key, which is what a support engineer greps for in the body. A
//! hand-rolled tree (rather than serde_qs into structs) keeps those key paths and never
//! depends on key order, which amoCRM has changed over the years.

use std::collections::BTreeMap;

/// A node of the form tree: a value, or a group of keyed children.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A leaf value, percent-decoded.
    Value(String),
    /// A group (`leads[add]`), its children by key (`0`, `1`, `id`…).
    Group(BTreeMap<String, Node>),
}

/// Why a body is not a form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A key or value is not valid UTF-8 after percent-decoding.
    #[error("`{0}` is not valid UTF-8 after percent-decoding")]
    NotUtf8(String),
    /// A key with unbalanced brackets (`a[b=1`).
    #[error("key `{0}` has unbalanced brackets")]
    BadKey(String),
    /// One key is given both as a value and as a group (`a=1&a[b]=2`).
    #[error("key `{0}` is given both as a value and as a group")]
    Conflict(String),
    /// No key at all.
    #[error("the body holds no form fields")]
    Empty,
}

/// Percent-decodes a form key or value (`+` is a space), in one pass and one allocation:
/// this runs for every pair of every webhook.
fn decode(raw: &[u8]) -> Result<String, FormError> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => {
                match (hex(raw[i + 1]), hex(raw[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    // A stray `%` stays as it is, as browsers and PHP leave it.
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| FormError::NotUtf8(String::from_utf8_lossy(raw).chars().take(60).collect()))
}

fn split_key(key: &str) -> Result<Vec<&str>, FormError> {
    let bad = || FormError::BadKey(key.to_owned());
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() || head.contains(']') {
        return Err(bad());
    }
    let mut parts = vec![head];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(bad)?;
        let end = inner.find(']').ok_or_else(bad)?;
        let part = &inner[..end];
        if part.contains('[') {
            return Err(bad());
        }
        parts.push(part);
        rest = &inner[end + 1..];
    }
    Ok(parts)
}

impl Node {
    /// Parses a form body into a tree.
    pub fn parse(body: &[u8]) -> Result<Node, FormError> {
        let mut root = BTreeMap::new();
        for pair in body.split(|&b| b == b'&') {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                continue;
            }
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let key = decode(k)?;
            let value = decode(v)?;
            insert(&mut root, &key, split_key(&key)?, value)?;
        }
        if root.is_empty() {
            return Err(FormError::Empty);
        }
        Ok(Node::Group(root))
    }

    /// The child under `key`, if this is a group that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Group(map) => map.get(key),
            Node::Value(_) => None,
        }
    }

    /// The value, if this is a leaf.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Value(v) => Some(v),
            Node::Group(_) => None,
        }
    }

    /// The children of a group in their natural order (`2` before `10`).
    pub fn children(&self) -> Vec<(&str, &Node)> {
        let mut items: Vec<(&str, &Node)> = match self {
            Node::Group(map) => map.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            Node::Value(_) => Vec::new(),
        };
        items.sort_by(|a, b| match (a.0.parse::<u64>(), b.0.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.0.cmp(b.0),
        });
        items
    }

    /// A canonical text of the subtree (sorted keys), for fingerprints that do not depend on
    /// the order the sender wrote the keys in.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        self.write_canonical("", &mut out);
        out
    }

    fn write_canonical(&self, prefix: &str, out: &mut String) {
        match self {
            Node::Value(v) => {
                out.push_str(prefix);
                out.push('=');
                out.push_str(v);
                out.push('&');
            }
            Node::Group(map) => {
                for (k, child) in map {
                    child.write_canonical(&format!("{prefix}[{k}]"), out);
                }
            }
        }
    }
}

fn insert(
    map: &mut BTreeMap<String, Node>,
    full_key: &str,
    parts: Vec<&str>,
    value: String,
) -> Result<(), FormError> {
    let mut current = map;
    let last = parts.len() - 1;
    for (i, part) in parts.into_iter().enumerate() {
        // `a[]=x&a[]=y` appends: the empty index becomes the next free one.
        let appended;
        let part = if part.is_empty() {
            appended = current.len().to_string();
            appended.as_str()
        } else {
            part
        };
        if i == last {
            if let Some(Node::Group(_)) = current.get(part) {
                return Err(FormError::Conflict(full_key.to_owned()));
            }
            // A repeated key keeps the last value, as PHP (which both CRMs are written in) does.
            current.insert(part.to_owned(), Node::Value(value));
            return Ok(());
        }
        // Look up before inserting: most levels exist already, and a lookup allocates nothing.
        if !current.contains_key(part) {
            current.insert(part.to_owned(), Node::Group(BTreeMap::new()));
        }
        let entry = current.get_mut(part).expect("inserted above");
        current = match entry {
            Node::Group(m) => m,
            Node::Value(_) => return Err(FormError::Conflict(full_key.to_owned())),
        };
    }
    Ok(())
}

/// A position in the tree that remembers its bracketed key, so that errors can name it.
#[derive(Debug, Clone)]
pub struct Field<'a> {
    node: &'a Node,
    path: String,
}

/// A required key is missing or has a value of the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} `{key}`")]
pub struct KeyError {
    /// The bracketed key, e.g. `leads[add][0][id]`.
    pub key: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl<'a> Field<'a> {
    /// The root of a parsed body.
    pub fn root(node: &'a Node) -> Field<'a> {
        Field {
            node,
            path: String::new(),
        }
    }

    /// The bracketed key of this position.
    pub fn key(&self) -> &str {
        &self.path
    }

    /// The last segment of the key: the index of an entity in a list, or a field's name.
    pub fn name(&self) -> &str {
        match self.path.rfind('[') {
            Some(i) => self.path[i + 1..].trim_end_matches(']'),
            None => &self.path,
        }
    }

    /// The bracketed key of a child.
    pub fn key_of(&self, child: &str) -> String {
        if self.path.is_empty() {
            child.to_owned()
        } else {
            format!("{}[{child}]", self.path)
        }
    }

    /// The node here.
    pub fn node(&self) -> &'a Node {
        self.node
    }

    /// The child under `key`.
    pub fn child(&self, key: &str) -> Option<Field<'a>> {
        self.node.get(key).map(|node| Field {
            node,
            path: self.key_of(key),
        })
    }

    /// The children of a group, in natural order, each with its key.
    pub fn children(&self) -> Vec<Field<'a>> {
        self.node
            .children()
            .into_iter()
            .map(|(k, node)| Field {
                node,
                path: self.key_of(k),
            })
            .collect()
    }

    /// A non-empty value under `key`. An empty value (`key=`) counts as absent: amoCRM sends
    /// empty strings for fields that were never filled.
    pub fn opt(&self, key: &str) -> Option<&'a str> {
        self.node
            .get(key)
            .and_then(Node::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// A required non-empty value under `key`.
    pub fn req(&self, key: &str) -> Result<&'a str, KeyError> {
        self.opt(key).ok_or_else(|| KeyError {
            key: self.key_of(key),
            reason: "missing key",
        })
    }

    /// A required value under `key` that must be a whole number (CRM ids are).
    pub fn req_id(&self, key: &str) -> Result<&'a str, KeyError> {
        let v = self.req(key)?;
        if v.bytes().all(|b| b.is_ascii_digit()) {
            Ok(v)
        } else {
            Err(KeyError {
                key: self.key_of(key),
                reason: "expected a numeric id in",
            })
        }
    }

    /// An optional value that must be a whole number when present.
    pub fn opt_id(&self, key: &str) -> Result<Option<&'a str>, KeyError> {
        match self.opt(key) {
            None => Ok(None),
            Some(_) => self.req_id(key).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_percent_encoded_brackets_into_a_tree() {
        let body = b"leads%5Badd%5D%5B0%5D%5Bid%5D=123&leads%5Badd%5D%5B0%5D%5Bname%5D=%D0%97%D0%B0%D1%8F%D0%B2%D0%BA%D0%B0+1&account%5Bsubdomain%5D=demo";
        let tree = Node::parse(body).unwrap();
        let root = Field::root(&tree);
        let lead = root
            .child("leads")
            .unwrap()
            .child("add")
            .unwrap()
            .children()
            .remove(0);
        assert_eq!(lead.name(), "0");
        assert_eq!(lead.req("id").unwrap(), "123");
        assert_eq!(lead.req("name").unwrap(), "Заявка 1");
        assert_eq!(
            root.child("account").unwrap().req("subdomain").unwrap(),
            "demo"
        );
    }

    #[test]
    fn a_missing_key_is_named_in_brackets() {
        let tree = Node::parse(b"leads[add][0][name]=x").unwrap();
        let lead = Field::root(&tree)
            .child("leads")
            .unwrap()
            .child("add")
            .unwrap()
            .children()
            .remove(0);
        let err = lead.req("id").unwrap_err();
        assert_eq!(err.to_string(), "missing key `leads[add][0][id]`");
    }

    #[test]
    fn empty_values_count_as_absent() {
        let tree = Node::parse(b"a[price]=&a[id]=7").unwrap();
        let a = Field::root(&tree).child("a").unwrap();
        assert_eq!(a.opt("price"), None);
        assert_eq!(a.opt_id("id").unwrap(), Some("7"));
    }

    #[test]
    fn children_come_in_numeric_order() {
        let tree = Node::parse(b"x[10]=b&x[2]=a").unwrap();
        let names: Vec<_> = tree
            .get("x")
            .unwrap()
            .children()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, vec!["2", "10"]);
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert_eq!(Node::parse(b"").unwrap_err(), FormError::Empty);
        assert!(matches!(
            Node::parse(b"a[b=1").unwrap_err(),
            FormError::BadKey(_)
        ));
        assert!(matches!(
            Node::parse(b"a=1&a[b]=2").unwrap_err(),
            FormError::Conflict(_)
        ));
        assert!(matches!(
            Node::parse(b"a=%FF%FE").unwrap_err(),
            FormError::NotUtf8(_)
        ));
    }

    #[test]
    fn canonical_text_ignores_key_order() {
        let a = Node::parse(b"x[a]=1&x[b]=2").unwrap();
        let b = Node::parse(b"x[b]=2&x[a]=1").unwrap();
        assert_eq!(a.canonical(), b.canonical());
    }

    #[test]
    fn empty_brackets_append() {
        let tree = Node::parse(b"t[]=a&t[]=b").unwrap();
        assert_eq!(tree.get("t").unwrap().get("1").unwrap().as_str(), Some("b"));
    }
}
