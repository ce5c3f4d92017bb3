//! The texts of messages: minijinja templates over a typed context (the lead, the contact,
//! the company, the manager, the products of the request and their analogues, the
//! client's previous purchases, the last messages).
//!
//! Undefined is strict: a placeholder the context does not have is an error when the text
//! is rendered, never an empty hole in a letter; [`Templates::unknown_placeholders`] finds
//! such placeholders before that, for `check-config`. An e-mail template starts with a line
//! `Тема: …`, the letter's subject.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, syntax::SyntaxConfig};
use serde::Serialize;

/// The first line of an e-mail template that gives the subject.
pub const SUBJECT: &str = "Тема:";

/// Names a template may use that are not in the context: minijinja's global functions.
const GLOBALS: [&str; 4] = ["range", "dict", "namespace", "loop"];

/// Maps of the context whose keys are the account's own (custom fields): any key below
/// them is accepted by the check and looked up when rendering.
const OPEN: [&str; 2] = ["lead.fields", "company.fields"];

/// The lead, as a template sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct LeadView {
    /// The CRM's id.
    pub id: String,
    /// Its title.
    pub name: String,
    /// The budget in roubles, when filled.
    pub budget: Option<f64>,
    /// The stage's name.
    pub stage: String,
    /// The refusal reason's name, when lost.
    pub loss_reason: String,
    /// What the client asked for, in their words (the request's text).
    pub request: String,
    /// Mapped custom fields by the robot's names, as text.
    pub fields: BTreeMap<String, String>,
}

/// The client's contact person.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ContactView {
    /// The full name as the CRM holds it.
    pub name: String,
    /// How to address them ("Иван Петрович"); empty when unknown.
    pub first_name: String,
    /// The phone.
    pub phone: String,
    /// The e-mail.
    pub email: String,
}

/// The client's company; all empty for a private person.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CompanyView {
    /// Its name.
    pub name: String,
    /// Mapped custom fields by the robot's names, as text.
    pub fields: BTreeMap<String, String>,
}

/// The lead's responsible manager, who signs the letter.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ManagerView {
    /// The name as the CRM shows it.
    pub name: String,
    /// The phone to call back.
    pub phone: String,
    /// The e-mail to answer to.
    pub email: String,
}

/// A product of the request, or an analogue offered instead.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ProductView {
    /// Its name.
    pub name: String,
    /// The brand.
    pub brand: String,
    /// How many, when said.
    pub quantity: Option<f64>,
    /// The price of one, in roubles, when known.
    pub price: Option<f64>,
}

/// A previous purchase of the client.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct PurchaseView {
    /// When, as a letter writes it ("15.01.2026").
    pub date: String,
    /// What was bought.
    pub name: String,
    /// For how much, in roubles.
    pub amount: Option<f64>,
}

/// One of the last messages between the client and the company.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct MessageView {
    /// When, as a letter writes it ("15.01.2026 10:30").
    pub at: String,
    /// Whether the client wrote it (otherwise the company did).
    pub from_client: bool,
    /// The text.
    pub text: String,
}

/// Everything a template can use.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct TemplateContext {
    /// The lead.
    pub lead: LeadView,
    /// The main contact.
    pub contact: ContactView,
    /// The company.
    pub company: CompanyView,
    /// The responsible manager.
    pub manager: ManagerView,
    /// The products of the request.
    pub products: Vec<ProductView>,
    /// Analogues for products that are out of stock.
    pub analogues: Vec<ProductView>,
    /// The client's previous purchases, the latest first.
    pub purchases: Vec<PurchaseView>,
    /// The last messages, the latest last.
    pub messages: Vec<MessageView>,
}

impl TemplateContext {
    /// A full context with every list filled: for checking that templates render.
    pub fn sample() -> TemplateContext {
        let product = |name: &str, brand: &str, price| ProductView {
            name: name.into(),
            brand: brand.into(),
            quantity: Some(2.0),
            price: Some(price),
        };
        TemplateContext {
            lead: LeadView {
                id: "31234567".into(),
                name: "Сварочные аппараты для цеха".into(),
                budget: Some(450_000.0),
                stage: "Квалификация".into(),
                loss_reason: "Нет контакта".into(),
                request: "Нужны два инвертора на 250 А".into(),
                fields: [("category".to_owned(), "Сварочное оборудование".to_owned())]
                    .into_iter()
                    .collect(),
            },
            contact: ContactView {
                name: "Петров Иван Сергеевич".into(),
                first_name: "Иван Сергеевич".into(),
                phone: "+7 912 345-67-89".into(),
                email: "petrov@example.ru".into(),
            },
            company: CompanyView {
                name: "ООО «Металлоконструкции»".into(),
                fields: BTreeMap::new(),
            },
            manager: ManagerView {
                name: "Анна Соколова".into(),
                phone: "+7 495 000-00-00".into(),
                email: "sokolova@example.ru".into(),
            },
            products: vec![product("Инвертор 250 А", "Сварог", 48_000.0)],
            analogues: vec![product("Инвертор 250 А", "Fubag", 45_500.0)],
            purchases: vec![PurchaseView {
                date: "15.01.2026".into(),
                name: "Электроды 3 мм, 20 пачек".into(),
                amount: Some(18_400.0),
            }],
            messages: vec![MessageView {
                at: "02.03.2026 10:30".into(),
                from_client: true,
                text: "А есть в наличии?".into(),
            }],
        }
    }

    /// Every placeholder path this context knows ("lead.name", "products"…), with the
    /// open maps whose keys are free.
    pub fn known_paths() -> Vec<String> {
        let mut out = Vec::new();
        let sample = serde_json::to_value(TemplateContext::sample()).unwrap_or_default();
        collect_paths(&sample, "", &mut out);
        out
    }
}

fn collect_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = value {
        for (key, inner) in map {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            out.push(path.clone());
            if !OPEN.contains(&path.as_str()) {
                collect_paths(inner, &path, out);
            }
        }
    }
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject, from a first line `Тема: …`.
    pub subject: Option<String>,
    /// The text.
    pub body: String,
}

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No template of that name.
    #[error("no template `{0}`")]
    Missing(String),
    /// The text is not a valid template.
    #[error("template `{name}`{}: {message}", at(*.line))]
    Syntax {
        /// The template.
        name: String,
        /// The line, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// Rendering failed (an unknown placeholder or filter).
    #[error("template `{name}`{}: {message}", at(*.line))]
    Render {
        /// The template.
        name: String,
        /// The line, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

fn at(line: Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

/// A placeholder a template uses that the context does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPlaceholder {
    /// As the template writes it ("lead.nme").
    pub path: String,
    /// The 1-based line of its first use, when found.
    pub line: Option<usize>,
}

/// The templates of `templates/`, ready to render.
pub struct Templates {
    env: Environment<'static>,
    names: BTreeSet<String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.names)
            .finish()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}

impl Templates {
    /// No templates yet; strict undefined, no HTML escaping, block tags on lines of their
    /// own leave no blank lines.
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        if let Ok(syntax) = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env.add_filter("money", money);
        Templates {
            env,
            names: BTreeSet::new(),
        }
    }

    /// Adds the template `name` with its text.
    pub fn add(&mut self, name: &str, source: String) -> Result<(), TemplateError> {
        self.env
            .add_template_owned(name.to_owned(), source)
            .map_err(|e| TemplateError::Syntax {
                name: name.to_owned(),
                line: e.line(),
                message: message(&e),
            })?;
        self.names.insert(name.to_owned());
        Ok(())
    }

    /// The names of the templates.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Whether there is a template `name`.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The template `name` rendered over `context`; the subject taken from a first line
    /// `Тема: …`.
    pub fn render(&self, name: &str, context: &TemplateContext) -> Result<Rendered, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|_| TemplateError::Missing(name.to_owned()))?;
        let text =
            template
                .render(Value::from(Serde(context)))
                .map_err(|e| TemplateError::Render {
                    name: name.to_owned(),
                    line: e.line(),
                    message: message(&e),
                })?;
        Ok(split_subject(&text))
    }

    /// Every placeholder path the template reads ("lead.name", "products"), as far as a
    /// look at the text tells: names set inside the template (loop variables) are not
    /// listed, attribute lookups on them are checked when rendering.
    pub fn placeholders(&self, name: &str) -> Result<BTreeSet<String>, TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|_| TemplateError::Missing(name.to_owned()))?;
        Ok(template.undeclared_variables(true).into_iter().collect())
    }

    /// The placeholders of template `name` that [`TemplateContext`] does not have.
    pub fn unknown_placeholders(
        &self,
        name: &str,
    ) -> Result<Vec<UnknownPlaceholder>, TemplateError> {
        let known = TemplateContext::known_paths();
        let source = self
            .env
            .get_template(name)
            .map_err(|_| TemplateError::Missing(name.to_owned()))?
            .source()
            .to_owned();
        let mut out = Vec::new();
        for path in self.placeholders(name)? {
            if GLOBALS.contains(&path.as_str()) || is_known(&path, &known) {
                continue;
            }
            let line = source
                .find(path.as_str())
                .map(|at| source[..at].matches('\n').count() + 1);
            out.push(UnknownPlaceholder { path, line });
        }
        Ok(out)
    }
}

/// Whether `path` is a known path or lies inside an open map.
fn is_known(path: &str, known: &[String]) -> bool {
    known.iter().any(|k| k == path)
        || OPEN.iter().any(|open| {
            path.strip_prefix(open)
                .is_some_and(|rest| rest.starts_with('.'))
        })
}

fn message(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

fn split_subject(text: &str) -> Rendered {
    let trimmed = text.trim_start_matches(['\n', '\r']);
    if let Some(rest) = trimmed.strip_prefix(SUBJECT) {
        let (subject, body) = rest.split_once('\n').unwrap_or((rest, ""));
        return Rendered {
            subject: Some(subject.trim().to_owned()),
            body: body.trim_start_matches(['\n', '\r']).trim_end().to_owned(),
        };
    }
    Rendered {
        subject: None,
        body: text.trim().to_owned(),
    }
}

/// `{{ 150000 | money }}` → `150 000`: roubles with a space between thousands, kopecks only
/// when there are any.
fn money(value: f64) -> String {
    let negative = value < 0.0;
    let cents = (value.abs() * 100.0).round() as u64;
    let (whole, kop) = (cents / 100, cents % 100);
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    let sign = if negative { "-" } else { "" };
    if kop == 0 {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped},{kop:02}")
    }
}
