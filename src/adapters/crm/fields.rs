//! Custom fields under the robot's own names. The config maps each name (`category`,
//! `score`…) to the account's field, by the name the CRM shows ("Категория") or by its id;
//! the adapter resolves them against the account once, and says which it cannot find.

use std::collections::BTreeMap;

/// How the config names a CRM field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRef {
    /// Its id (amoCRM's number, Bitrix24's `UF_CRM_…` code).
    Id(String),
    /// Its name as the CRM shows it.
    Name(String),
}

impl FieldRef {
    /// Reads a config value: digits or a `UF_CRM_` code are an id, anything else a name.
    pub fn parse(text: &str) -> FieldRef {
        let t = text.trim();
        if t.bytes().all(|b| b.is_ascii_digit()) || t.starts_with("UF_CRM_") {
            FieldRef::Id(t.to_owned())
        } else {
            FieldRef::Name(t.to_owned())
        }
    }
}

/// A custom field of the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountField {
    /// Its id or code.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether it holds numbers (then values are written as numbers).
    pub numeric: bool,
}

/// The robot's names resolved to the account's fields, both ways.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedFields {
    by_ours: BTreeMap<String, AccountField>,
    by_id: BTreeMap<String, String>,
}

impl ResolvedFields {
    /// Resolves `wanted` (our name → reference) against the account's fields. Returns the
    /// resolution and, for each name it could not find, a message naming it.
    pub fn resolve(
        wanted: &BTreeMap<String, FieldRef>,
        account: &[AccountField],
    ) -> (ResolvedFields, Vec<String>) {
        let mut resolved = ResolvedFields::default();
        let mut missing = Vec::new();
        for (ours, reference) in wanted {
            let found = account.iter().find(|f| match reference {
                FieldRef::Id(id) => &f.id == id,
                FieldRef::Name(name) => f.name.trim().eq_ignore_ascii_case(name),
            });
            match found {
                Some(f) => {
                    resolved.by_id.insert(f.id.clone(), ours.clone());
                    resolved.by_ours.insert(ours.clone(), f.clone());
                }
                None => missing.push(match reference {
                    FieldRef::Id(id) => format!("`{ours}`: the account has no field with id {id}"),
                    FieldRef::Name(name) => {
                        format!("`{ours}`: the account has no field named «{name}»")
                    }
                }),
            }
        }
        (resolved, missing)
    }

    /// The account field for our name.
    pub fn field(&self, ours: &str) -> Option<&AccountField> {
        self.by_ours.get(ours)
    }

    /// The account field with this id, when one of ours maps to it.
    pub fn field_by_id(&self, id: &str) -> Option<&AccountField> {
        self.ours(id).and_then(|ours| self.field(ours))
    }

    /// Our name for an account field id.
    pub fn ours(&self, id: &str) -> Option<&str> {
        self.by_id.get(id).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_resolve_and_the_missing_are_named() {
        let account = vec![
            AccountField {
                id: "512345".into(),
                name: "Категория".into(),
                numeric: false,
            },
            AccountField {
                id: "512346".into(),
                name: "Скоринг".into(),
                numeric: true,
            },
        ];
        let wanted = BTreeMap::from([
            ("category".to_owned(), FieldRef::parse("Категория")),
            ("score".to_owned(), FieldRef::parse("512346")),
            ("brand".to_owned(), FieldRef::parse("Бренд")),
        ]);
        let (resolved, missing) = ResolvedFields::resolve(&wanted, &account);
        assert_eq!(resolved.field("category").unwrap().id, "512345");
        assert!(resolved.field("score").unwrap().numeric);
        assert_eq!(resolved.ours("512345"), Some("category"));
        assert_eq!(
            missing,
            vec!["`brand`: the account has no field named «Бренд»".to_owned()]
        );
        assert_eq!(
            FieldRef::parse("UF_CRM_SCORE"),
            FieldRef::Id("UF_CRM_SCORE".into())
        );
    }
}
