//! A product of a lead's request, as the CRM lists it (amoCRM's catalog elements linked to
//! the lead, Bitrix24's product rows of the deal), and the analogues the company offers
//! when one is out of stock.

use serde::{Deserialize, Serialize};

/// One product of the request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Product {
    /// Its name in the catalog (or in the row).
    pub name: String,
    /// Its brand, where the catalog says it.
    pub brand: Option<String>,
    /// How many the client asked for, when said.
    pub quantity: Option<f64>,
    /// The price of one, in roubles, when known.
    pub price: Option<f64>,
}

/// What the company offers instead of a product: the rows of `[[analogues]]` in
/// `chains.toml`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Analogue {
    /// A part of the names of the products it replaces, compared without regard to case
    /// ("САИ-250" replaces «Сварог САИ-250 ПРОФ»).
    pub product: String,
    /// Only products of this brand, when given.
    pub brand: Option<String>,
    /// What is offered, in order.
    pub offer: Vec<Product>,
}

impl Analogue {
    /// Whether this row is about `product`.
    pub fn replaces(&self, product: &Product) -> bool {
        let name = product.name.to_lowercase();
        let brand_fits = match (&self.brand, &product.brand) {
            (None, _) => true,
            (Some(want), Some(is)) => want.to_lowercase() == is.to_lowercase(),
            (Some(_), None) => false,
        };
        brand_fits && !self.product.trim().is_empty() && name.contains(&self.product.to_lowercase())
    }
}

/// The analogues to offer for `products`: every row's offer for each product it replaces,
/// in the order of the products and then of the rows, each offer once, and never a
/// product the client asked for already.
pub fn analogues_for(products: &[Product], table: &[Analogue]) -> Vec<Product> {
    let mut out: Vec<Product> = Vec::new();
    for product in products {
        for row in table.iter().filter(|row| row.replaces(product)) {
            for offer in &row.offer {
                let asked = products.iter().any(|p| same(p, offer));
                if !asked && !out.iter().any(|o| same(o, offer)) {
                    out.push(offer.clone());
                }
            }
        }
    }
    out
}

fn same(a: &Product, b: &Product) -> bool {
    a.name.to_lowercase() == b.name.to_lowercase()
        && a.brand.as_deref().map(str::to_lowercase) == b.brand.as_deref().map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(name: &str, brand: &str) -> Product {
        Product {
            name: name.into(),
            brand: Some(brand.into()),
            ..Product::default()
        }
    }

    #[test]
    fn a_row_replaces_products_whose_name_holds_its_words() {
        let row = Analogue {
            product: "саи-250".into(),
            brand: Some("Ресанта".into()),
            offer: vec![product("ТИГ-200", "Fubag")],
        };
        assert!(row.replaces(&product("Ресанта САИ-250 ПРОФ", "ресанта")));
        assert!(!row.replaces(&product("Ресанта САИ-250 ПРОФ", "Сварог")));
        assert!(!row.replaces(&product("Ресанта САИ-190", "Ресанта")));
    }

    #[test]
    fn each_analogue_is_offered_once_and_never_what_was_asked() {
        let table = [
            Analogue {
                product: "САИ-250".into(),
                brand: None,
                offer: vec![product("ТИГ-200", "Fubag"), product("Маска", "Сварог")],
            },
            Analogue {
                product: "САИ-190".into(),
                brand: None,
                offer: vec![product("ТИГ-200", "Fubag")],
            },
        ];
        let asked = [
            product("САИ-250", "Ресанта"),
            product("САИ-190", "Ресанта"),
            product("Маска", "Сварог"),
        ];
        assert_eq!(analogues_for(&asked, &table), [product("ТИГ-200", "Fubag")]);
        assert!(analogues_for(&[product("Кабель", "КГ")], &table).is_empty());
    }
}
