//! The amoCRM emulator, driven with reqwest as the robot's client will drive the real API.

use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

use crate::support::amocrm::*;

struct Api {
    emu: AmoEmulator,
    http: Client,
    token: String,
}

impl Api {
    async fn start() -> Api {
        let emu = AmoEmulator::start().await;
        let (token, _refresh) = emu.issue_tokens();
        Api {
            emu,
            http: Client::new(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.emu.base_url(), path)
    }

    async fn get(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET")
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Response {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    async fn patch(&self, path: &str, body: Value) -> Response {
        self.send(reqwest::Method::PATCH, path, body).await
    }

    async fn post(&self, path: &str, body: Value) -> Response {
        self.send(reqwest::Method::POST, path, body).await
    }
}

async fn json_of(response: Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn ids(list: &Value, key: &str) -> Vec<i64> {
    list["_embedded"][key]
        .as_array()
        .expect("an embedded list")
        .iter()
        .map(|item| item["id"].as_i64().expect("id"))
        .collect()
}

fn field(entity: &Value, field_id: i64) -> &Value {
    entity["custom_fields_values"]
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["field_id"] == json!(field_id)))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_lead_embeds_only_the_ids_of_its_contacts_and_companies() {
    let api = Api::start().await;
    let lead_id = api.emu.seed_lead(
        NewLead::new("Диван угловой")
            .price(84_000)
            .contact(CONTACT_OLGA)
            .contact(CONTACT_ALEXEY)
            .company(COMPANY_ROMASHKA)
            .field(FIELD_CATEGORY, json!({ "enum_id": CATEGORY_FURNITURE }))
            .field(FIELD_BRAND, json!("Askona"))
            .tag("сайт"),
    );

    let response = api
        .get(&format!("/api/v4/leads/{lead_id}?with=contacts,companies"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/hal+json",
        "success bodies are HAL"
    );
    let lead = json_of(response).await;
    assert_eq!(lead["id"], json!(lead_id));
    assert_eq!(lead["price"], json!(84_000));
    assert_eq!(lead["pipeline_id"], json!(PIPELINE_SALES));
    assert_eq!(lead["status_id"], json!(STATUS_FIRST_CONTACT));
    assert_eq!(lead["loss_reason_id"], Value::Null);
    assert_eq!(lead["closed_at"], Value::Null);
    assert_eq!(lead["account_id"], json!(ACCOUNT_ID));
    for key in [
        "group_id",
        "created_by",
        "updated_by",
        "created_at",
        "updated_at",
        "is_deleted",
    ] {
        assert!(lead.get(key).is_some(), "{key} is always present");
    }

    let contacts = lead["_embedded"]["contacts"].as_array().expect("contacts");
    assert_eq!(contacts.len(), 2);
    assert_eq!(contacts[0]["id"], json!(CONTACT_OLGA));
    assert_eq!(contacts[0]["is_main"], json!(true));
    assert_eq!(contacts[1]["is_main"], json!(false));
    for contact in contacts {
        assert!(
            contact.get("name").is_none() && contact.get("custom_fields_values").is_none(),
            "the phone needs a second read: {contact}"
        );
    }
    assert_eq!(
        lead["_embedded"]["companies"][0]["id"],
        json!(COMPANY_ROMASHKA)
    );
    assert_eq!(lead["_embedded"]["tags"][0]["name"], json!("сайт"));

    let category = field(&lead, FIELD_CATEGORY);
    assert_eq!(category["field_name"], json!("Категория"));
    assert_eq!(category["field_type"], json!("select"));
    assert_eq!(category["field_code"], Value::Null);
    assert_eq!(category["values"][0]["value"], json!("Мебель"));
    assert_eq!(category["values"][0]["enum_id"], json!(CATEGORY_FURNITURE));
    assert_eq!(
        field(&lead, FIELD_BRAND)["values"][0]["value"],
        json!("Askona")
    );

    // Without `with=contacts` there are no contacts at all.
    let plain = json_of(api.get(&format!("/api/v4/leads/{lead_id}")).await).await;
    assert!(plain["_embedded"].get("contacts").is_none());

    // A lead that does not exist is "no content", with no body.
    let missing = api.get("/api/v4/leads/999999999").await;
    assert_eq!(missing.status(), StatusCode::NO_CONTENT);
    assert!(missing.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn the_phone_of_a_contact_comes_from_a_second_read() {
    let api = Api::start().await;
    let contact = json_of(api.get(&format!("/api/v4/contacts/{CONTACT_ALEXEY}")).await).await;
    assert_eq!(contact["name"], json!("Алексей Смирнов"));
    let phone = field(&contact, FIELD_PHONE);
    assert_eq!(phone["field_code"], json!("PHONE"));
    assert_eq!(phone["field_type"], json!("multitext"));
    assert_eq!(phone["values"][0]["value"], json!("+7 916 123-45-67"));
    assert_eq!(phone["values"][0]["enum_code"], json!("WORK"));
    assert!(phone["values"][0]["enum_id"].is_i64());
    assert_eq!(
        field(&contact, FIELD_EMAIL)["values"][0]["value"],
        json!("a.smirnov@example.ru")
    );

    // Searching by the digits finds the contact whatever the formatting.
    let found = json_of(api.get("/api/v4/contacts?query=79161234567").await).await;
    assert_eq!(ids(&found, "contacts"), vec![CONTACT_ALEXEY]);
    let none = api.get("/api/v4/contacts?query=70000000000").await;
    assert_eq!(none.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_company_or_contact_embeds_the_ids_of_its_leads_when_asked() {
    let api = Api::start().await;
    let company = api.emu.seed_company("ООО Сварка-Про");
    let first = api.emu.seed_lead(
        NewLead::new("Первая")
            .company(company)
            .contact(CONTACT_ALEXEY),
    );
    let second = api.emu.seed_lead(NewLead::new("Вторая").company(company));
    api.emu
        .seed_lead(NewLead::new("Чужая").company(COMPANY_ROMASHKA));

    let with = json_of(
        api.get(&format!("/api/v4/companies/{company}?with=leads"))
            .await,
    )
    .await;
    assert_eq!(ids(&with, "leads"), vec![first, second]);
    for lead in with["_embedded"]["leads"].as_array().unwrap() {
        assert!(lead.get("status_id").is_none(), "ids only: {lead}");
    }
    let plain = json_of(api.get(&format!("/api/v4/companies/{company}")).await).await;
    assert!(plain["_embedded"].get("leads").is_none(), "{plain}");
    let contacts = json_of(
        api.get(&format!(
            "/api/v4/companies/{COMPANY_ROMASHKA}?with=contacts"
        ))
        .await,
    )
    .await;
    assert_eq!(ids(&contacts, "contacts"), vec![CONTACT_OLGA]);

    let alexey = json_of(
        api.get(&format!("/api/v4/contacts/{CONTACT_ALEXEY}?with=leads"))
            .await,
    )
    .await;
    assert_eq!(ids(&alexey, "leads"), vec![first]);
    let olga = json_of(
        api.get(&format!("/api/v4/contacts/{CONTACT_OLGA}?with=leads"))
            .await,
    )
    .await;
    assert_eq!(ids(&olga, "leads"), Vec::<i64>::new());

    // The leads themselves come from the list by id.
    let list = json_of(
        api.get(&format!(
            "/api/v4/leads?filter[id][]={first}&filter[id][]={second}&limit=250"
        ))
        .await,
    )
    .await;
    assert_eq!(ids(&list, "leads"), vec![first, second]);

    let missing = api.get("/api/v4/companies/999999999?with=leads").await;
    assert_eq!(missing.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_patch_is_read_back_and_a_bad_one_changes_nothing() {
    let api = Api::start().await;
    let hour_ago = api.emu.now() - 3600;
    let lead_id = api.emu.seed_lead(
        NewLead::new("Ноутбук")
            .price(1_000)
            .status(STATUS_NEGOTIATION)
            .updated_at(hour_ago),
    );

    let response = api
        .patch(
            &format!("/api/v4/leads/{lead_id}"),
            json!({
                "price": 95_000,
                "status_id": STATUS_LOST,
                "loss_reason_id": LOSS_TOO_EXPENSIVE,
                "responsible_user_id": USER_IVAN,
                "custom_fields_values": [
                    { "field_id": FIELD_SCORING, "values": [{ "value": 87 }] },
                    { "field_id": FIELD_CATEGORY, "values": [{ "enum_id": CATEGORY_ELECTRONICS }] },
                ],
                "_embedded": { "tags": [{ "name": "робот" }] },
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json_of(response).await;
    assert_eq!(answer["id"], json!(lead_id));
    assert!(answer["updated_at"].as_i64().expect("updated_at") > hour_ago);

    let lead = json_of(
        api.get(&format!("/api/v4/leads/{lead_id}?with=loss_reason"))
            .await,
    )
    .await;
    assert_eq!(lead["price"], json!(95_000));
    assert_eq!(lead["status_id"], json!(STATUS_LOST));
    assert_eq!(lead["responsible_user_id"], json!(USER_IVAN));
    assert_eq!(lead["updated_by"], json!(USER_ELENA), "the token's user");
    assert!(lead["closed_at"].is_i64(), "closing sets closed_at");
    assert_eq!(lead["loss_reason_id"], json!(LOSS_TOO_EXPENSIVE));
    assert_eq!(lead["_embedded"]["loss_reason"][0]["name"], json!("Дорого"));
    assert_eq!(
        field(&lead, FIELD_SCORING)["values"][0]["value"],
        json!("87")
    );
    assert_eq!(
        field(&lead, FIELD_CATEGORY)["values"][0]["value"],
        json!("Электроника")
    );
    assert_eq!(lead["_embedded"]["tags"][0]["name"], json!("робот"));
    assert_eq!(
        api.emu.lead(lead_id).expect("stored")["price"],
        json!(95_000)
    );

    // One unknown field refuses the whole batch, and says where.
    let other = api.emu.seed_lead(NewLead::new("Кресло").price(5_000));
    let response = api
        .patch(
            "/api/v4/leads",
            json!([
                { "id": other, "price": 7_000 },
                { "id": lead_id, "custom_fields_values": [{ "field_id": 1, "values": [{ "value": "x" }] }] },
            ]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem = json_of(response).await;
    assert_eq!(problem["title"], json!("Bad Request"));
    assert_eq!(problem["status"], json!(400));
    let refused = &problem["validation-errors"][0];
    assert_eq!(refused["request_id"], json!("1"));
    assert_eq!(refused["errors"][0]["code"], json!("NotSupportedChoice"));
    assert_eq!(
        refused["errors"][0]["path"],
        json!("custom_fields_values.0.field_id")
    );
    assert_eq!(api.emu.lead(other).expect("stored")["price"], json!(5_000));

    // At most 250 leads a batch.
    let batch: Vec<Value> = (0..251)
        .map(|_| json!({ "id": other, "price": 1 }))
        .collect();
    let response = api.patch("/api/v4/leads", json!(batch)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // A batch within the limit goes through.
    let response = api
        .patch(
            "/api/v4/leads",
            json!([{ "id": other, "price": 6_000, "request_id": "r1" }]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json_of(response).await;
    assert_eq!(answer["_embedded"]["leads"][0]["request_id"], json!("r1"));
    assert_eq!(api.emu.lead(other).expect("stored")["price"], json!(6_000));
}

#[tokio::test]
async fn paging_follows_next_to_a_no_content_end_and_filters_apply() {
    let api = Api::start().await;
    let now = api.emu.now();
    let mut seeded = Vec::new();
    for i in 0..6 {
        let status = if i % 2 == 0 {
            STATUS_QUALIFICATION
        } else {
            STATUS_FIRST_CONTACT
        };
        seeded.push(
            api.emu.seed_lead(
                NewLead::new(&format!("Сделка {i}"))
                    .status(status)
                    .updated_at(now - 600 + i * 100),
            ),
        );
    }

    let mut path = "/api/v4/leads?limit=3".to_owned();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let response = api.get(&path).await;
        if response.status() == StatusCode::NO_CONTENT {
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
        let page = json_of(response).await;
        pages += 1;
        assert_eq!(page["_page"], json!(pages));
        seen.extend(ids(&page, "leads"));
        let Some(next) = page["_links"]["next"]["href"].as_str() else {
            break;
        };
        path = next
            .strip_prefix(api.emu.base_url())
            .expect("links point at the same host")
            .to_owned();
    }
    assert_eq!(pages, 2, "two full pages, then a 204");
    assert_eq!(seen, seeded);

    // Over the maximum limit is refused.
    let response = api.get("/api/v4/leads?limit=251").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // The catch-up read: leads modified since a moment.
    let since = now - 300;
    let recent = json_of(
        api.get(&format!("/api/v4/leads?filter[updated_at][from]={since}"))
            .await,
    )
    .await;
    assert_eq!(ids(&recent, "leads"), seeded[3..].to_vec());

    // One stage of one pipeline, in PHP's bracket syntax, percent-encoded as clients send it.
    let response = api
        .http
        .get(api.url("/api/v4/leads"))
        .bearer_auth(&api.token)
        .query(&[
            (
                "filter[statuses][0][pipeline_id]",
                PIPELINE_SALES.to_string(),
            ),
            (
                "filter[statuses][0][status_id]",
                STATUS_QUALIFICATION.to_string(),
            ),
        ])
        .send()
        .await
        .expect("GET");
    let qualified = json_of(response).await;
    assert_eq!(
        ids(&qualified, "leads"),
        vec![seeded[0], seeded[2], seeded[4]]
    );
}

#[tokio::test]
async fn tasks_are_created_completed_and_listed_open() {
    let api = Api::start().await;
    let lead_id = api.emu.seed_lead(NewLead::new("Холодильник"));
    let due = api.emu.now() + 3600;

    // `complete_till` is required; nothing is created when one task of the batch lacks it.
    let response = api
        .post(
            "/api/v4/tasks",
            json!([
                { "text": "Позвонить", "complete_till": due, "entity_id": lead_id, "entity_type": "leads" },
                { "text": "Без срока", "entity_id": lead_id, "entity_type": "leads" },
            ]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem = json_of(response).await;
    let refused = &problem["validation-errors"][0];
    assert_eq!(refused["request_id"], json!("1"));
    assert_eq!(refused["errors"][0]["path"], json!("complete_till"));
    assert!(api.emu.tasks().is_empty());

    let response = api
        .post(
            "/api/v4/tasks",
            json!([
                {
                    "text": "Перезвонить клиенту",
                    "complete_till": due,
                    "entity_id": lead_id,
                    "entity_type": "leads",
                    "task_type_id": TASK_TYPE_FOLLOW_UP,
                    "responsible_user_id": USER_MARIA,
                },
                { "text": "Встреча в шоуруме", "complete_till": due + 86_400, "entity_id": lead_id, "entity_type": "leads", "task_type_id": TASK_TYPE_MEETING },
            ]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let created = ids(&json_of(response).await, "tasks");
    assert_eq!(created.len(), 2);

    let open_path = format!(
        "/api/v4/tasks?filter[is_completed]=0&filter[entity_type]=leads&filter[entity_id][]={lead_id}"
    );
    let open = json_of(api.get(&open_path).await).await;
    assert_eq!(ids(&open, "tasks"), created);
    let first = &open["_embedded"]["tasks"][0];
    assert_eq!(first["responsible_user_id"], json!(USER_MARIA));
    assert_eq!(first["is_completed"], json!(false));
    assert_eq!(first["complete_till"], json!(due));

    let lead = json_of(api.get(&format!("/api/v4/leads/{lead_id}")).await).await;
    assert_eq!(lead["closest_task_at"], json!(due));

    let response = api
        .patch(
            "/api/v4/tasks",
            json!([{ "id": created[0], "is_completed": true, "result": { "text": "Клиент думает" } }]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let open = json_of(api.get(&open_path).await).await;
    assert_eq!(ids(&open, "tasks"), vec![created[1]]);
    let done = api
        .emu
        .tasks()
        .into_iter()
        .find(|t| t["id"] == json!(created[0]))
        .expect("task");
    assert_eq!(done["is_completed"], json!(true));
    assert_eq!(done["result"]["text"], json!("Клиент думает"));
}

#[tokio::test]
async fn notes_are_added_to_a_lead() {
    let api = Api::start().await;
    let lead_id = api.emu.seed_lead(NewLead::new("Шкаф-купе"));
    let response = api
        .post(
            &format!("/api/v4/leads/{lead_id}/notes"),
            json!([{ "note_type": "common", "params": { "text": "Скоринг 87: горячий лид" } }]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = json_of(response).await;
    assert_eq!(answer["_embedded"]["notes"][0]["entity_id"], json!(lead_id));

    let notes = json_of(api.get(&format!("/api/v4/leads/{lead_id}/notes")).await).await;
    let note = &notes["_embedded"]["notes"][0];
    assert_eq!(note["note_type"], json!("common"));
    assert_eq!(note["params"]["text"], json!("Скоринг 87: горячий лид"));
    assert_eq!(api.emu.notes_of(lead_id).len(), 1);

    // A common note without text is refused.
    let response = api
        .post(
            &format!("/api/v4/leads/{lead_id}/notes"),
            json!([{ "note_type": "common", "params": {} }]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(api.emu.notes_of(lead_id).len(), 1);
}

#[tokio::test]
async fn the_account_pipelines_loss_reasons_users_and_fields() {
    let api = Api::start().await;

    let account = json_of(api.get("/api/v4/account").await).await;
    assert_eq!(account["id"], json!(ACCOUNT_ID));
    assert_eq!(account["subdomain"], json!(SUBDOMAIN));

    let pipelines = json_of(api.get("/api/v4/leads/pipelines").await).await;
    let sales = &pipelines["_embedded"]["pipelines"][0];
    assert_eq!(sales["name"], json!("Продажи"));
    assert_eq!(sales["is_main"], json!(true));
    let statuses: Vec<(i64, String)> = sales["_embedded"]["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .map(|s| {
            (
                s["id"].as_i64().unwrap(),
                s["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (id, name) in [
        (STATUS_FIRST_CONTACT, "Первичный контакт"),
        (STATUS_QUALIFICATION, "Квалификация"),
        (STATUS_NEGOTIATION, "Переговоры"),
        (STATUS_WON, "Успешно реализовано"),
        (STATUS_LOST, "Закрыто и не реализовано"),
    ] {
        assert!(statuses.contains(&(id, name.to_owned())), "{name}");
    }

    let reasons = json_of(api.get("/api/v4/leads/loss_reasons").await).await;
    let names: Vec<&str> = reasons["_embedded"]["loss_reasons"]
        .as_array()
        .expect("loss reasons")
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Нет контакта", "Дорого", "Нет товара"]);

    let users = json_of(api.get("/api/v4/users").await).await;
    let names: Vec<&str> = users["_embedded"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Елена Прекрасная", "Иван Петров", "Мария Сидорова"]);
    assert_eq!(
        users["_embedded"]["users"][0]["rights"]["is_admin"],
        json!(true)
    );

    let fields = json_of(api.get("/api/v4/leads/custom_fields").await).await;
    let fields: Vec<(&str, &str)> = fields["_embedded"]["custom_fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [
            ("Категория", "select"),
            ("Бренд", "text"),
            ("Скоринг", "numeric"),
            ("Приоритет", "numeric"),
            ("Ожидаемая прибыль", "numeric"),
        ]
    );
}

async fn token_request(api: &Api, form: &[(&str, &str)]) -> Response {
    let client = api.emu.oauth_client();
    let mut body = json!({
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "redirect_uri": client.redirect_uri,
    });
    for (k, v) in form {
        body[*k] = json!(v);
    }
    api.http
        .post(api.url("/oauth2/access_token"))
        .json(&body)
        .send()
        .await
        .expect("token request")
}

async fn status_with(api: &Api, token: &str) -> StatusCode {
    api.http
        .get(api.url("/api/v4/account"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET")
        .status()
}

#[tokio::test]
async fn a_code_is_exchanged_refreshed_once_and_a_reused_refresh_revokes_everything() {
    let api = Api::start().await;
    let code = api.emu.issue_code();

    let response = token_request(
        &api,
        &[("grant_type", "authorization_code"), ("code", &code)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens = json_of(response).await;
    assert_eq!(tokens["token_type"], json!("Bearer"));
    assert_eq!(tokens["expires_in"], json!(86_400));
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_eq!(access.split('.').count(), 3, "shaped like a JWT");
    assert_eq!(status_with(&api, &access).await, StatusCode::OK);

    // A code is single-use.
    let again = token_request(
        &api,
        &[("grant_type", "authorization_code"), ("code", &code)],
    )
    .await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);

    // A wrong secret is an unknown client.
    let client = api.emu.oauth_client();
    let response = api
        .http
        .post(api.url("/oauth2/access_token"))
        .form(&[
            ("client_id", client.client_id.as_str()),
            ("client_secret", "wrong"),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("redirect_uri", client.redirect_uri.as_str()),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(response).await["title"],
        json!("Некорректный клиент")
    );

    let response = token_request(
        &api,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let renewed = json_of(response).await;
    let access2 = renewed["access_token"].as_str().expect("access").to_owned();
    let refresh2 = renewed["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(refresh2, refresh);
    assert_eq!(status_with(&api, &access2).await, StatusCode::OK);
    assert_eq!(
        status_with(&api, &access).await,
        StatusCode::UNAUTHORIZED,
        "a refresh retires the access token it came with"
    );
    assert_eq!(api.emu.refresh_reuses(), 0);

    // The same refresh token a second time: refused, and the integration loses every token.
    let response = token_request(
        &api,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let problem = json_of(response).await;
    assert_eq!(problem["hint"], json!("Token has been revoked"));
    assert_eq!(
        problem["type"],
        json!("https://developers.amocrm.ru/v3/errors/OAuthProblemJson")
    );
    assert_eq!(api.emu.refresh_reuses(), 1);
    assert_eq!(status_with(&api, &access2).await, StatusCode::UNAUTHORIZED);
    let response = token_request(
        &api,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh2),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Only a new consent (a new code) brings the integration back.
    let code = api.emu.issue_code();
    let response = token_request(
        &api,
        &[("grant_type", "authorization_code"), ("code", &code)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn retrying_a_refresh_whose_answer_was_lost_revokes_the_integration() {
    let api = Api::start().await;
    let (_, refresh) = api.emu.issue_tokens();

    api.emu.fail_next_token_requests(1, 503);
    let response = token_request(
        &api,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        api.emu.refresh_reuses(),
        0,
        "a refusal before processing spends nothing"
    );

    api.emu.lose_next_token_answers(1);
    let response = token_request(
        &api,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let retry = token_request(
        &api,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(retry.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.emu.refresh_reuses(), 1);
}

#[tokio::test]
async fn an_expired_or_unknown_token_is_unauthorized() {
    let api = Api::start().await;
    assert_eq!(status_with(&api, &api.token).await, StatusCode::OK);

    let response = api
        .http
        .get(api.url("/api/v4/account"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let problem = json_of(response).await;
    assert_eq!(problem["title"], json!("Unauthorized"));
    assert_eq!(problem["status"], json!(401));

    api.emu.expire_access_tokens();
    assert_eq!(
        status_with(&api, &api.token).await,
        StatusCode::UNAUTHORIZED
    );

    // The 24-hour lifetime, passed on the emulator's clock; a long-lived token outlives it.
    let (fresh, _) = api.emu.issue_tokens();
    let long_lived = api.emu.long_lived_token();
    assert_eq!(status_with(&api, &fresh).await, StatusCode::OK);
    api.emu.advance_clock(Duration::from_secs(24 * 3600 + 1));
    assert_eq!(status_with(&api, &fresh).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(&api, &long_lived).await, StatusCode::OK);
}

#[tokio::test]
async fn the_eighth_request_within_a_second_is_429() {
    let api = Api::start().await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(api.get("/api/v4/account").await.status());
    }
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(limited, 1, "{statuses:?}");
    assert_eq!(statuses[7], StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(api.emu.too_many_requests(), 1);

    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(api.get("/api/v4/account").await.status(), StatusCode::OK);
    assert!(!api.emu.blocked());
    assert_eq!(api.emu.api_request_count(), 9);
}

#[tokio::test]
async fn repeated_429s_block_the_account_with_403() {
    let api = Api::start().await;
    api.emu.set_block_threshold(3);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(api.get("/api/v4/account").await.status());
    }
    assert_eq!(api.emu.too_many_requests(), 4, "{statuses:?}");
    assert!(api.emu.blocked());
    assert_eq!(statuses[11], StatusCode::FORBIDDEN);
    let response = api.get("/api/v4/account").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response.text().await.expect("body").contains("nginx"),
        "the block is an HTML page, not JSON"
    );
}

#[tokio::test]
async fn injected_failures_come_first_then_success() {
    let api = Api::start().await;
    api.emu.fail_next(1, 502);
    let response = api.get("/api/v4/account").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(api.get("/api/v4/account").await.status(), StatusCode::OK);

    let recorded = api.emu.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].status, 502);
    assert_eq!(recorded[1].method, "GET");
    assert_eq!(recorded[1].path, "/api/v4/account");
    assert_eq!(api.emu.request_count(), 2);
}
