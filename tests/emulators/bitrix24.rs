//! The Bitrix24 emulator answers what the real portal answers, over HTTP, to a plain client.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::bitrix24::{B24Emulator, DEAL_TYPE};

/// POSTs a JSON body to `base + method`; answers the status and the parsed body
/// (`Value::String` with the text when the body is not JSON).
async fn post_json(base: &str, method: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{method}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    read(response).await
}

/// POSTs a raw `application/x-www-form-urlencoded` body, bracketed keys and all.
async fn post_form(base: &str, method: &str, form: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{method}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .expect("request");
    read(response).await
}

async fn get(url: &str) -> (u16, Value) {
    read(reqwest::get(url).await.expect("request")).await
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn seed_deals(b24: &B24Emulator, n: usize, stage: &str) -> Vec<i64> {
    (0..n)
        .map(|i| {
            b24.seed_deal(json!({
                "TITLE": format!("Поставка электродов, партия {i}"),
                "STAGE_ID": stage,
                "OPPORTUNITY": 10_000 + i,
                "DATE_MODIFY": "2026-11-01T10:00:00+03:00",
            }))
        })
        .collect()
}

#[tokio::test]
async fn deal_get_update_and_list_to_the_last_page() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    let id = b24.seed_deal(json!({
        "TITLE": "Сварочные аппараты для ООО Сварка-Про",
        "OPPORTUNITY": 150000,
        "COMPANY_ID": 11,
        "CONTACT_IDS": [202],
        "ASSIGNED_BY_ID": 2,
    }));

    let (status, body) = post_json(&hook, "crm.deal.get.json", json!({"id": id})).await;
    assert_eq!(status, 200, "{body}");
    let deal = &body["result"];
    assert_eq!(deal["ID"], json!(id.to_string()));
    assert_eq!(deal["OPPORTUNITY"], "150000.00");
    assert_eq!(deal["STAGE_ID"], "NEW");
    assert_eq!(deal["COMPANY_ID"], "11");
    assert_eq!(deal["CONTACT_ID"], "202");
    assert_eq!(deal["CURRENCY_ID"], "RUB");
    assert_eq!(deal["STAGE_SEMANTIC_ID"], "P");
    assert!(
        deal.get("CONTACT_IDS").is_none(),
        "crm.deal.get does not show CONTACT_IDS"
    );
    assert!(body["time"]["operating_reset_at"].is_i64());
    assert!(
        body["time"]["date_start"]
            .as_str()
            .unwrap()
            .ends_with("+03:00")
    );

    // Form encoding with bracketed keys; unknown and read-only fields are silently ignored.
    let form = format!(
        "id={id}&fields%5BSTAGE_ID%5D=EXECUTING&fields[UF_CRM_SCORE]=87&fields[UF_CRM_PRIORITY]=45\
         &fields[NO_SUCH_FIELD]=x&fields[DATE_CREATE]=2001-01-01&fields[title]=ignored"
    );
    let (status, body) = post_form(&hook, "crm.deal.update", &form).await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
    let deal = b24.deal(id).unwrap();
    assert_eq!(deal["STAGE_ID"], "EXECUTING");
    assert_eq!(deal["UF_CRM_SCORE"], "87");
    assert_eq!(deal["UF_CRM_PRIORITY"], "45");
    assert_eq!(deal["MODIFY_BY_ID"], "1");
    assert_eq!(deal["TITLE"], "Сварочные аппараты для ООО Сварка-Про");
    assert!(deal.get("NO_SUCH_FIELD").is_none());
    assert_ne!(deal["DATE_CREATE"], "2001-01-01T00:00:00+03:00");

    // A stage that does not exist is refused, and nothing of the call is written.
    let (status, body) = post_json(
        &hook,
        "crm.deal.update",
        json!({"id": id, "fields": {"STAGE_ID": "NO_SUCH", "TITLE": "x"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        b24.deal(id).unwrap()["TITLE"],
        "Сварочные аппараты для ООО Сварка-Про"
    );

    // Winning closes the deal.
    post_json(
        &hook,
        "crm.deal.update",
        json!({"id": id, "fields": {"STAGE_ID": "WON"}}),
    )
    .await;
    let deal = b24.deal(id).unwrap();
    assert_eq!(
        (deal["STAGE_SEMANTIC_ID"].as_str(), deal["CLOSED"].as_str()),
        (Some("S"), Some("Y"))
    );

    let (status, body) = post_json(&hook, "crm.deal.get", json!({"id": 999_999})).await;
    assert_eq!(status, 400);
    assert_eq!(body, json!({"error": "", "error_description": "Not found"}));

    // 119 more deals: 120 in all, three pages of 50, 50 and 20.
    seed_deals(&b24, 60, "PREPARATION");
    seed_deals(&b24, 59, "NEW");
    let mut seen = Vec::new();
    let mut start = Some(0);
    let mut pages = 0;
    while let Some(s) = start {
        let (status, body) = post_json(
            &hook,
            "crm.deal.list",
            json!({"order": {"ID": "ASC"}, "select": ["ID", "TITLE", "UF_*"], "start": s}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], 120);
        let page = body["result"].as_array().unwrap();
        assert!(page.len() <= 50);
        assert!(page[0].get("UF_CRM_SCORE").is_some() && page[0].get("STAGE_ID").is_none());
        seen.extend(page.iter().map(|d| d["ID"].as_str().unwrap().to_owned()));
        start = body.get("next").and_then(Value::as_i64);
        pages += 1;
    }
    assert_eq!(pages, 3);
    seen.dedup();
    assert_eq!(seen.len(), 120);

    // Filters: by stage, and the catch-up read of what changed since a moment.
    let (_, body) = get(&format!("{hook}crm.deal.list?filter[STAGE_ID]=PREPARATION")).await;
    assert_eq!(body["total"], 60);
    assert!(body.get("next").is_some());
    let (_, body) = post_json(
        &hook,
        "crm.deal.list",
        json!({"filter": {">DATE_MODIFY": "2026-11-02T00:00:00+03:00"}, "select": ["ID"]}),
    )
    .await;
    assert_eq!(body["total"], 1, "{body}");
    assert_eq!(body["result"][0]["ID"], json!(id.to_string()));
    assert!(body.get("next").is_none());

    // `start=-1`: a page without the count, as the docs advise for big reads.
    let (_, body) = post_json(
        &hook,
        "crm.deal.list",
        json!({"filter": {">ID": id}, "order": {"ID": "ASC"}, "start": -1}),
    )
    .await;
    assert_eq!(body["result"].as_array().unwrap().len(), 50);
    assert!(body.get("total").is_none() && body.get("next").is_none());

    // Added in another funnel, a deal starts at that funnel's first stage.
    let (_, body) = post_json(
        &hook,
        "crm.deal.add",
        json!({"fields": {"TITLE": "Повторная поставка", "CATEGORY_ID": 1}}),
    )
    .await;
    let added = body["result"].as_i64().unwrap();
    assert_eq!(b24.deal(added).unwrap()["STAGE_ID"], "C1:NEW");

    // The contacts of a deal.
    let (_, body) = post_json(&hook, "crm.deal.contact.items.get", json!({"id": id})).await;
    assert_eq!(body["result"][0]["CONTACT_ID"], 202);
    assert_eq!(body["result"][0]["IS_PRIMARY"], "Y");
}

#[tokio::test]
async fn universal_item_methods_speak_camel_case() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    let id = b24.seed_deal(
        json!({"TITLE": "Металлоконструкции", "OPPORTUNITY": "99000.5", "UF_CRM_CATEGORY": 51}),
    );

    let (status, body) = post_json(
        &hook,
        "crm.item.get",
        json!({"entityTypeId": DEAL_TYPE, "id": id}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let item = &body["result"]["item"];
    assert_eq!(item["id"], id);
    assert_eq!(item["title"], "Металлоконструкции");
    assert_eq!(item["opportunity"], 99000.5);
    assert_eq!(item["stageId"], "NEW");
    assert_eq!(item["ufCrmCategory"], 51);
    assert!(item["createdTime"].is_string() && item["contactIds"].is_array());

    let (status, body) = post_json(
        &hook,
        "crm.item.update",
        json!({"entityTypeId": 2, "id": id,
               "fields": {"ufCrmScore": 42.5, "stageId": "PREPARATION", "noSuchField": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["item"]["ufCrmScore"], 42.5);
    assert_eq!(b24.deal(id).unwrap()["STAGE_ID"], "PREPARATION");

    // Moving to another funnel is for crm.item.update only; the stage follows the funnel.
    post_json(
        &hook,
        "crm.item.update",
        json!({"entityTypeId": 2, "id": id, "fields": {"categoryId": 1}}),
    )
    .await;
    let deal = b24.deal(id).unwrap();
    assert_eq!(
        (deal["CATEGORY_ID"].as_str(), deal["STAGE_ID"].as_str()),
        (Some("1"), Some("C1:NEW"))
    );

    let (status, body) =
        post_json(&hook, "crm.item.get", json!({"entityTypeId": 2, "id": 5})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "NOT_FOUND");
}

#[tokio::test]
async fn batch_runs_three_commands_as_one_request() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    let id = b24.seed_deal(json!({"TITLE": "Поставка проволоки", "COMPANY_ID": 11}));

    // Written as text: `json!` sorts keys, and here "company" must come after "deal" (the
    // order of `cmd` is the order of execution, so a client must keep it too).
    let body = format!(
        r#"{{"halt": 0, "cmd": {{
            "deal": "crm.deal.get?id={id}",
            "company": "crm.company.get?id=$result[deal][COMPANY_ID]",
            "missing": "crm.deal.get?id=424242",
            "managers": "user.get?filter[WORK_POSITION]=Менеджер по продажам&filter[ACTIVE]=Y"
        }}}}"#
    );
    let response = reqwest::Client::new()
        .post(format!("{hook}batch"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{body}");
    let r = &body["result"];
    assert_eq!(r["result"]["deal"]["TITLE"], "Поставка проволоки");
    assert_eq!(r["result"]["company"]["TITLE"], "ООО Сварка-Про");
    assert_eq!(
        r["result_error"]["missing"]["error_description"],
        "Not found"
    );
    assert_eq!(r["result_total"]["managers"], 2);
    assert_eq!(r["result_next"], json!([]));
    assert!(r["result_time"]["deal"]["duration"].is_f64());
    assert_eq!(b24.request_count(), 1, "a batch is one request");

    // Over 50 commands: the first 50 run, the rest fail. (Zero-padded keys keep the order
    // that `json!` sorts.)
    let mut cmd = serde_json::Map::new();
    for i in 0..51 {
        cmd.insert(format!("c{i:02}"), json!("user.current"));
    }
    let (status, body) = post_json(&hook, "batch", json!({"cmd": cmd})).await;
    assert_eq!(status, 200);
    let r = &body["result"];
    assert_eq!(r["result"].as_object().unwrap().len(), 50);
    assert_eq!(r["result_error"].as_object().unwrap().len(), 1);
    assert_eq!(
        r["result_error"]["c50"]["error"],
        "ERROR_BATCH_LENGTH_EXCEEDED"
    );

    // No batch inside a batch.
    let (_, body) = post_json(
        &hook,
        "batch",
        json!({"cmd": {"inner": "batch?cmd[x]=user.current"}}),
    )
    .await;
    assert_eq!(
        body["result"]["result_error"]["inner"]["error"],
        "ERROR_BATCH_METHOD_NOT_ALLOWED"
    );

    // halt=1 stops at the first error; numbered commands come back as lists.
    let (_, body) = post_form(
        &hook,
        "batch",
        "halt=1&cmd[0]=crm.deal.get%3Fid%3D424242&cmd[1]=user.current",
    )
    .await;
    assert_eq!(body["result"]["result"], json!([]), "{body}");
    assert_eq!(
        body["result"]["result_error"][0]["error_description"],
        "Not found"
    );
}

#[tokio::test]
async fn the_leaky_bucket_refuses_the_request_past_the_burst_then_drains() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    b24.set_bucket(5, 2.0);
    for i in 0..5 {
        let (status, body) = get(&format!("{hook}user.current")).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let (status, body) = get(&format!("{hook}user.current")).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
    );
    assert_eq!(b24.query_limit_hits(), 1);

    // 2 a second drain: one slot is free again after half a second.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = get(&format!("{hook}user.current")).await;
    assert_eq!(status, 200);
    let (status, _) = get(&format!("{hook}user.current")).await;
    assert_eq!(status, 503);
    assert_eq!(b24.query_limit_hits(), 2);
}

#[tokio::test]
async fn todo_activity_and_timeline_comment() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    let id = b24.seed_deal(json!({"TITLE": "Заявка на сварку труб"}));

    let (status, body) = post_json(
        &hook,
        "crm.activity.todo.add",
        json!({"ownerTypeId": 2, "ownerId": id, "deadline": "2026-11-24T12:00:00",
               "title": "Перезвонить клиенту", "description": "Уточнить объём", "responsibleId": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"]["id"].is_i64());
    let activities = b24.activities();
    assert_eq!(activities.len(), 1);
    assert_eq!(activities[0]["OWNER_ID"], json!(id.to_string()));
    assert_eq!(activities[0]["DEADLINE"], "2026-11-24T12:00:00+03:00");
    assert_eq!(activities[0]["RESPONSIBLE_ID"], "2");

    let (status, body) = post_json(
        &hook,
        "crm.activity.todo.add",
        json!({"ownerTypeId": 2, "ownerId": 777, "deadline": "2026-11-24T12:00:00"}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("NOT_FOUND")));

    let form = format!(
        "fields[ENTITY_ID]={id}&fields[ENTITY_TYPE]=deal&fields[COMMENT]=Робот%3A+горячий+лид"
    );
    let (status, body) = post_form(&hook, "crm.timeline.comment.add", &form).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"].is_i64());
    let comments = b24.comments_of(id);
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0]["COMMENT"], "Робот: горячий лид");

    let (status, body) = post_json(
        &hook,
        "tasks.task.add",
        json!({"fields": {"TITLE": "Подготовить КП", "RESPONSIBLE_ID": 3,
                          "DEADLINE": "2026-11-25T18:00:00+03:00", "UF_CRM_TASK": [format!("D_{id}")]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["task"]["responsibleId"], "3");
    assert_eq!(b24.tasks()[0]["ufCrmTask"], json!([format!("D_{id}")]));
    let (status, body) = post_json(
        &hook,
        "tasks.task.add",
        json!({"fields": {"RESPONSIBLE_ID": 3}}),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("ERROR_CORE")));
}

#[tokio::test]
async fn users_statuses_categories_and_fields() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();

    let (_, body) = get(&format!("{hook}user.get?ID=1")).await;
    assert_eq!(body["result"][0]["NAME"], "Елена");
    assert_eq!(body["result"][0]["LAST_NAME"], "Прекрасная");
    let (_, body) = post_json(&hook, "user.get", json!({"filter": {"ACTIVE": true}})).await;
    assert_eq!(body["total"], 3, "the dismissed manager is not active");

    let (_, body) = post_json(
        &hook,
        "crm.status.list",
        json!({"filter": {"ENTITY_ID": "DEAL_STAGE"}}),
    )
    .await;
    let stages: Vec<(&str, &str)> = body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["STATUS_ID"].as_str().unwrap(),
                s["NAME"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        [
            ("NEW", "Новая"),
            ("PREPARATION", "Подготовка документов"),
            ("EXECUTING", "В работе"),
            ("WON", "Сделка успешна"),
            ("LOSE", "Сделка провалена"),
        ]
    );
    assert_eq!(body["result"][4]["EXTRA"]["SEMANTICS"], "failure");
    let (_, body) = get(&format!(
        "{hook}crm.status.list?filter[ENTITY_ID]=DEAL_STAGE_1"
    ))
    .await;
    assert_eq!(body["result"][0]["STATUS_ID"], "C1:NEW");
    assert_eq!(body["result"][0]["CATEGORY_ID"], "1");
    let (_, body) = get(&format!("{hook}crm.status.list?filter[ENTITY_ID]=SOURCE")).await;
    assert!(
        body["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["NAME"] == "Веб-сайт")
    );

    let (_, body) = post_json(&hook, "crm.category.list", json!({"entityTypeId": 2})).await;
    assert_eq!(body["result"]["categories"][0]["name"], "Продажи");
    let (_, body) = get(&format!("{hook}crm.dealcategory.list")).await;
    assert_eq!(body["result"][0]["NAME"], "Повторные продажи");

    let (_, body) = get(&format!("{hook}crm.deal.fields")).await;
    let priority = &body["result"]["UF_CRM_PRIORITY"];
    assert_eq!(priority["type"], "enumeration");
    assert_eq!(priority["listLabel"], "Приоритет");
    assert_eq!(
        priority["items"][0],
        json!({"ID": "45", "VALUE": "Высокий"})
    );
    assert_eq!(
        body["result"]["UF_CRM_LOSS_REASON"]["items"][1]["VALUE"],
        "Выбрали конкурента"
    );
    assert_eq!(body["result"]["STAGE_ID"]["statusType"], "DEAL_STAGE");

    let (status, body) = get(&format!("{hook}crm.no.such.method")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("ERROR_METHOD_NOT_FOUND"))
    );
}

#[tokio::test]
async fn contact_multifields_and_company() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    let (_, body) = get(&format!("{hook}crm.contact.get?id=203")).await;
    let contact = &body["result"];
    assert_eq!(contact["NAME"], "Андрей");
    assert_eq!(contact["PHONE"][0]["VALUE"], "+7 912 345-67-89");
    assert_eq!(contact["PHONE"][0]["TYPE_ID"], "PHONE");
    assert_eq!(contact["HAS_PHONE"], "Y");
    let phone_id = contact["PHONE"][0]["ID"].as_str().unwrap().to_owned();

    let (status, body) = post_json(
        &hook,
        "crm.contact.update",
        json!({"id": 203, "fields": {"PHONE": [
            {"ID": phone_id, "DELETE": "Y"},
            {"VALUE": "+7 912 000-00-01", "VALUE_TYPE": "WORK"}
        ]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let phones = b24.contact(203).unwrap()["PHONE"].clone();
    assert_eq!(phones.as_array().unwrap().len(), 1);
    assert_eq!(phones[0]["VALUE"], "+7 912 000-00-01");

    let (_, body) = get(&format!("{hook}crm.company.get?id=11")).await;
    assert_eq!(body["result"]["TITLE"], "ООО Сварка-Про");
    let (status, body) = post_json(
        &hook,
        "crm.company.update",
        json!({"id": 1, "fields": {"TITLE": "x"}}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error_description"], "Company is not found");

    let (_, body) = post_json(
        &hook,
        "crm.lead.list",
        json!({"filter": {"STATUS_ID": "NEW"}, "select": ["*", "PHONE"]}),
    )
    .await;
    assert_eq!(body["total"], 1);
    assert_eq!(body["result"][0]["PHONE"][0]["VALUE"], "+7 900 111-22-33");
}

#[tokio::test]
async fn wrong_webhook_code_and_spent_time_budget() {
    let b24 = B24Emulator::start().await;
    let (status, body) = get(&format!(
        "{}/rest/1/wrongcode/crm.deal.list",
        b24.base_url()
    ))
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"})
    );

    let hook = b24.webhook_url();
    b24.exhaust_method("crm.deal.list");
    let (status, body) = get(&format!("{hook}crm.deal.list")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("OPERATION_TIME_LIMIT"))
    );
    let (status, _) = get(&format!("{hook}crm.deal.fields")).await;
    assert_eq!(status, 200, "other methods keep working");
    let (_, body) = post_json(&hook, "batch", json!({"cmd": {"a": "crm.deal.list"}})).await;
    assert_eq!(
        body["result"]["result_error"]["a"]["error"],
        "OPERATION_TIME_LIMIT"
    );
    b24.restore_method("crm.deal.list");
    let (status, _) = get(&format!("{hook}crm.deal.list")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn oauth_token_expires_then_the_refresh_gives_a_working_pair() {
    let b24 = B24Emulator::start().await;
    let rest = b24.rest_url();
    let (access, refresh) = b24.issue_oauth_tokens();

    let (status, body) = get(&format!("{rest}crm.deal.fields?auth={access}")).await;
    assert_eq!(status, 200, "{body}");

    b24.expire_access_tokens();
    let (status, body) = post_json(&rest, "user.current", json!({"auth": access})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "expired_token");

    let (client_id, client_secret) = b24.oauth_client();
    let url = format!(
        "{}?grant_type=refresh_token&client_id={client_id}&client_secret={client_secret}&refresh_token={refresh}",
        b24.oauth_token_url()
    );
    let (status, body) = get(&url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 3600);
    let new_access = body["access_token"].as_str().unwrap();
    assert_ne!(body["refresh_token"].as_str().unwrap(), refresh);

    let (status, body) = get(&format!("{rest}user.current.json?auth={new_access}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["NAME"], "Елена");

    // A refresh token is spent by its use.
    let (status, body) = get(&url).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = get(&format!("{rest}user.current")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("NO_AUTH_FOUND"))
    );
}

#[tokio::test]
async fn injected_failures_come_first_then_the_portal_answers() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    b24.fail_next(1, 502);
    let (status, body) = get(&format!("{hook}user.current")).await;
    assert_eq!(status, 502);
    assert!(
        body.as_str().unwrap().contains("502 Bad Gateway"),
        "nginx's HTML, not JSON"
    );
    let (status, _) = get(&format!("{hook}user.current")).await;
    assert_eq!(status, 200);
    let requests = b24.requests();
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.method_name.as_str(), r.status))
            .collect::<Vec<_>>(),
        [("user.current", 502), ("user.current", 200)]
    );
}

#[tokio::test]
async fn todos_are_listed_read_and_completed_as_activities() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    let deal = b24.seed_deal(json!({"TITLE": "Поставка электродов"}));
    let mut ids = Vec::new();
    for (title, responsible) in [("Перезвонить клиенту", 2), ("Отправить КП", 3)]
    {
        let (status, body) = post_json(
            &hook,
            "crm.activity.todo.add",
            json!({"ownerTypeId": DEAL_TYPE, "ownerId": deal, "deadline": "2026-11-24T12:00:00",
                   "title": title, "description": format!("{title}\nподробности"),
                   "responsibleId": responsible}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["result"]["id"].as_i64().unwrap());
    }
    // Someone else's call on a contact, already done, and an app's configurable activity.
    b24.seed_activity(json!({"TYPE_ID": 2, "PROVIDER_ID": "VOXIMPLANT_CALL",
                             "PROVIDER_TYPE_ID": "CALL", "OWNER_TYPE_ID": 3, "OWNER_ID": 203,
                             "SUBJECT": "Входящий звонок", "COMPLETED": "Y", "STATUS": "2",
                             "RESPONSIBLE_ID": 2}));
    let configurable = b24.seed_activity(json!({"PROVIDER_ID": "CONFIGURABLE_REST_APP",
                                                "PROVIDER_TYPE_ID": "APP", "OWNER_TYPE_ID": 2,
                                                "OWNER_ID": deal, "SUBJECT": "Дело приложения"}));

    // The open to-dos of the deal, by the fields the robot selects.
    let (status, body) = post_json(
        &hook,
        "crm.activity.list",
        json!({"filter": {"COMPLETED": "N", "OWNER_TYPE_ID": 2, "OWNER_ID": deal,
                          "PROVIDER_ID": "CRM_TODO"},
               "select": ["ID", "OWNER_TYPE_ID", "OWNER_ID", "TYPE_ID", "SUBJECT", "DESCRIPTION",
                          "DEADLINE", "RESPONSIBLE_ID", "COMPLETED"],
               "order": {"ID": "ASC"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 2);
    assert!(body.get("next").is_none());
    let first = &body["result"][0];
    assert_eq!(first["ID"], json!(ids[0].to_string()));
    assert_eq!(first["TYPE_ID"], "6");
    assert_eq!(first["OWNER_ID"], json!(deal.to_string()));
    assert_eq!(first["SUBJECT"], "Перезвонить клиенту");
    assert_eq!(first["DESCRIPTION"], "Перезвонить клиенту\nподробности");
    assert_eq!(first["DEADLINE"], "2026-11-24T12:00:00+03:00");
    assert_eq!(first["RESPONSIBLE_ID"], "2");
    assert_eq!(first["COMPLETED"], "N");
    assert!(
        first.get("PROVIDER_ID").is_none() && first.get("AUTHOR_ID").is_none(),
        "only the selected fields: {first}"
    );

    // Form encoding; without `select` every field but COMMUNICATIONS and FILES.
    let (_, body) = post_form(
        &hook,
        "crm.activity.list",
        "filter[COMPLETED]=N&filter[RESPONSIBLE_ID]=3&order[ID]=DESC",
    )
    .await;
    assert_eq!(body["total"], 1, "{body}");
    let todo = &body["result"][0];
    assert_eq!(
        (
            todo["PROVIDER_ID"].as_str(),
            todo["PROVIDER_TYPE_ID"].as_str()
        ),
        (Some("CRM_TODO"), Some("TODO"))
    );
    assert_eq!(
        (todo["STATUS"].as_str(), todo["AUTHOR_ID"].as_str()),
        (Some("1"), Some("1"))
    );
    assert_eq!(todo["END_TIME"], "2026-11-24T12:00:00+03:00");
    assert!(todo.get("COMMUNICATIONS").is_none() && todo.get("PING_OFFSETS").is_none());
    let (_, body) = get(&format!("{hook}crm.activity.list?filter[COMPLETED]=Y")).await;
    assert_eq!(body["result"][0]["PROVIDER_ID"], "VOXIMPLANT_CALL");
    // BINDINGS: a row for each pair an activity matches.
    let (_, body) = post_json(
        &hook,
        "crm.activity.list",
        json!({"filter": {"BINDINGS": [{"OWNER_TYPE_ID": 2}, {"OWNER_ID": deal}],
                          "PROVIDER_ID": "CRM_TODO"}, "select": ["ID"]}),
    )
    .await;
    assert_eq!(body["total"], 4, "{body}");

    // One by id; a missing one is the old methods' bare phrase.
    let (status, body) = post_json(&hook, "crm.activity.get", json!({"id": ids[1]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["SUBJECT"], "Отправить КП");
    assert_eq!(body["result"]["OWNER_TYPE_ID"], "2");
    let (status, body) = post_json(&hook, "crm.activity.get", json!({"id": 999_999})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "", "error_description": "Activity is not found"})
    );
    let (status, body) = get(&format!("{hook}crm.activity.get")).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("ID is not defined or invalid."))
    );

    // Completing: `COMPLETED=Y` alone, as a form; read-only fields are ignored.
    let form = format!(
        "id={}&fields[COMPLETED]=Y&fields[OWNER_ID]=1&fields[PROVIDER_ID]=X",
        ids[0]
    );
    let (status, body) = post_form(&hook, "crm.activity.update", &form).await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
    let done = b24
        .activities()
        .into_iter()
        .find(|a| a["ID"] == json!(ids[0].to_string()))
        .unwrap();
    assert_eq!(
        (done["COMPLETED"].as_str(), done["STATUS"].as_str()),
        (Some("Y"), Some("2"))
    );
    assert_eq!(done["OWNER_ID"], json!(deal.to_string()));
    assert_eq!(done["PROVIDER_ID"], "CRM_TODO");
    let (_, body) = post_json(
        &hook,
        "crm.activity.list",
        json!({"filter": {"COMPLETED": "N", "PROVIDER_ID": "CRM_TODO"}}),
    )
    .await;
    assert_eq!(body["total"], 1);

    for (params, phrase) in [
        (
            json!({"id": 999_999, "fields": {"COMPLETED": "Y"}}),
            "Activity is not found",
        ),
        (
            json!({"id": ids[1], "fields": {"SUBJECT": ""}}),
            "The field SUBJECT is not defined or empty",
        ),
        (
            json!({"id": ids[1], "fields": {"RESPONSIBLE_ID": 77}}),
            "The field RESPONSIBLE_ID is not defined or invalid",
        ),
        (
            json!({"id": configurable, "fields": {"COMPLETED": "Y"}}),
            "Use crm.activity.configurable.update for this activity provider",
        ),
    ] {
        let (status, body) = post_json(&hook, "crm.activity.update", params).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body, json!({"error": "", "error_description": phrase}));
    }

    // The robot's way: read, then complete, in one halting batch.
    let body = format!(
        r#"{{"halt": 1, "cmd": {{
            "activity": "crm.activity.get?id={id}",
            "done": "crm.activity.update?id={id}&fields[COMPLETED]=Y"
        }}}}"#,
        id = ids[1]
    );
    let response = reqwest::Client::new()
        .post(format!("{hook}batch"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["result"]["activity"]["COMPLETED"], "N");
    assert_eq!(body["result"]["result"]["done"], true);
    let (_, body) = post_json(
        &hook,
        "crm.activity.list",
        json!({"filter": {"COMPLETED": "N", "PROVIDER_ID": "CRM_TODO"}}),
    )
    .await;
    assert_eq!(body["total"], 0, "{body}");
}

#[tokio::test]
async fn activities_come_fifty_a_page() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    let deal = b24.seed_deal(json!({"TITLE": "Много дел"}));
    for i in 0..120 {
        // Deadlines run backwards, so the default order (START_TIME) is not the ID order.
        let at = format!("2026-12-{:02}T10:00:00+03:00", 28 - i % 28);
        b24.seed_activity(
            json!({"OWNER_TYPE_ID": 2, "OWNER_ID": deal, "SUBJECT": format!("Дело {i}"),
                                 "START_TIME": at, "END_TIME": at, "DEADLINE": at}),
        );
    }
    let mut seen = Vec::new();
    let mut start = Some(0);
    let mut nexts = Vec::new();
    while let Some(s) = start {
        let (status, body) = post_json(
            &hook,
            "crm.activity.list",
            json!({"filter": {"OWNER_ID": deal}, "select": ["ID", "START_TIME"], "start": s}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["total"], 120);
        seen.extend(
            body["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["START_TIME"].as_str().unwrap().to_owned()),
        );
        start = body.get("next").and_then(Value::as_i64);
        nexts.push(start);
    }
    assert_eq!(nexts, [Some(50), Some(100), None]);
    assert_eq!(seen.len(), 120);
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "START_TIME ascending by default"
    );
}

#[tokio::test]
async fn tasks_are_listed_completed_and_commented() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    let deal = b24.seed_deal(json!({"TITLE": "Поставка проволоки"}));
    let mut ids = Vec::new();
    for title in ["Подготовить КП", "Согласовать доставку"] {
        let (status, body) = post_json(
            &hook,
            "tasks.task.add",
            json!({"fields": {"TITLE": title, "DESCRIPTION": format!("{title}: подробно"),
                              "RESPONSIBLE_ID": 3, "DEADLINE": "2026-11-25T18:00:00+03:00",
                              "UF_CRM_TASK": [format!("D_{deal}")]}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["task"]["status"], "2");
        ids.push(body["result"]["task"]["id"].as_str().unwrap().to_owned());
    }

    let (status, body) = post_json(&hook, "tasks.task.complete", json!({"taskId": ids[0]})).await;
    assert_eq!(status, 200, "{body}");
    let task = &body["result"]["task"];
    assert_eq!(
        (task["status"].as_str(), task["closedBy"].as_str()),
        (Some("5"), Some("1"))
    );
    assert!(task["closedDate"].is_string());

    // The open ones, camelCase, by the robot's filter and select.
    let (status, body) = post_json(
        &hook,
        "tasks.task.list",
        json!({"filter": {"!REAL_STATUS": 5},
               "select": ["ID", "TITLE", "DESCRIPTION", "DEADLINE", "RESPONSIBLE_ID", "UF_CRM_TASK",
                          "STATUS"],
               "order": {"ID": "ASC"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1);
    assert!(body.get("next").is_none());
    let tasks = body["result"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    let open = &tasks[0];
    assert_eq!(open["id"], json!(ids[1]));
    assert_eq!(open["title"], "Согласовать доставку");
    assert_eq!(open["description"], "Согласовать доставку: подробно");
    assert_eq!(open["deadline"], "2026-11-25T18:00:00+03:00");
    assert_eq!(open["responsibleId"], "3");
    assert_eq!(open["responsible"]["name"], "Ольга Смирнова");
    assert_eq!(open["ufCrmTask"], json!([format!("D_{deal}")]));
    assert_eq!(open["status"], "2");
    assert!(open["subStatus"].is_string());
    assert!(
        open.get("createdBy").is_none(),
        "only the selected fields: {open}"
    );

    // The default order is the newest first; filters by binding and by REAL_STATUS.
    let (_, body) = get(&format!(
        "{hook}tasks.task.list?filter[UF_CRM_TASK]=D_{deal}"
    ))
    .await;
    assert_eq!(body["result"]["tasks"][0]["id"], json!(ids[1]), "{body}");
    assert_eq!(body["result"]["tasks"][1]["createdBy"], "1");
    let (_, body) = get(&format!("{hook}tasks.task.list?filter[REAL_STATUS]=5")).await;
    assert_eq!(body["result"]["tasks"][0]["id"], json!(ids[0]));
    let (status, body) = post_json(
        &hook,
        "tasks.task.list",
        json!({"order": {"NO_SUCH": "asc"}}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "0", "error_description": "Invalid sorting key (internal error)"})
        )
    );

    // A closed task, a missing one and a wrong id.
    for (params, phrase) in [
        (
            json!({"taskId": ids[0]}),
            "Action on the task is not allowed",
        ),
        (
            json!({"taskId": 999_999}),
            "Action on the task is not allowed",
        ),
        (json!({"taskId": "abc"}), "wrong task id"),
    ] {
        let (status, body) = post_json(&hook, "tasks.task.complete", params).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body, json!({"error": "0", "error_description": phrase}));
    }
    let (status, body) = post_json(&hook, "tasks.task.complete", json!({})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("100")));

    // Comments: TASKID then FIELDS, by position.
    let form = format!("TASKID={}&FIELDS[POST_MESSAGE]=Клиент+согласен", ids[1]);
    let (status, body) = post_form(&hook, "task.commentitem.add", &form).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"].is_i64());
    let comments = b24.task_comments();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0]["POST_MESSAGE"], "Клиент согласен");
    assert_eq!(comments[0]["TASK_ID"], json!(ids[1]));
    let reversed = format!("FIELDS[POST_MESSAGE]=Клиент+согласен&TASKID={}", ids[1]);
    let (status, body) = post_form(&hook, "task.commentitem.add", &reversed).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("ERROR_CORE")));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("256/TE/WRONG_ARGUMENTS")
    );
    // (Forms here: `json!` sorts its keys, which would put FIELDS first.)
    for (task, message, phrase) in [
        (ids[1].as_str(), "", "Comment text is not specified<br>"),
        (
            "999999",
            "x",
            "Insufficient permissions to add a comment.<br>",
        ),
    ] {
        let form = format!("TASKID={task}&FIELDS[POST_MESSAGE]={message}");
        let (status, body) = post_form(&hook, "task.commentitem.add", &form).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body,
            json!({"error": "ERROR_CORE", "error_description": phrase})
        );
    }

    // The robot's way: the result, then the completion, in one batch.
    let commands = format!(
        "cmd[result]=task.commentitem.add%3FTASKID%3D{id}%26FIELDS%5BPOST_MESSAGE%5D%3D%D0%93%D0%BE%D1%82%D0%BE%D0%B2%D0%BE\
         &cmd[done]=tasks.task.complete%3FtaskId%3D{id}",
        id = ids[1]
    );
    let (status, body) = post_form(&hook, "batch", &commands).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["result_error"], json!([]), "{body}");
    assert_eq!(body["result"]["result"]["done"]["task"]["status"], "5");
    assert_eq!(b24.task_comments()[1]["POST_MESSAGE"], "Готово");
    let (_, body) = post_json(
        &hook,
        "tasks.task.list",
        json!({"filter": {"!REAL_STATUS": 5}, "select": ["ID"]}),
    )
    .await;
    assert_eq!(body["total"], 0, "{body}");
}

#[tokio::test]
async fn tasks_come_fifty_a_page_and_controlled_ones_wait_for_the_creator() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    for i in 0..55 {
        b24.seed_task(json!({"TITLE": format!("Задача {i}"), "RESPONSIBLE_ID": 2}));
    }
    let (_, body) = post_json(
        &hook,
        "tasks.task.list",
        json!({"select": ["ID"], "order": {"ID": "asc"}}),
    )
    .await;
    assert_eq!(body["total"], 55);
    assert_eq!(body["next"], 50);
    assert_eq!(body["result"]["tasks"].as_array().unwrap().len(), 50);
    let (_, body) = post_json(
        &hook,
        "tasks.task.list",
        json!({"select": ["ID"], "order": {"ID": "asc"}, "start": 50}),
    )
    .await;
    assert_eq!(body["result"]["tasks"].as_array().unwrap().len(), 5);
    assert!(body.get("next").is_none());

    // Set by Иван with completion control: the webhook's user only hands it in (status 4),
    // and it stays open for a `!REAL_STATUS: 5` filter.
    let controlled = b24.seed_task(json!({"TITLE": "Проверить счёт", "CREATED_BY": 2,
                                          "RESPONSIBLE_ID": 1, "TASK_CONTROL": "Y"}));
    let (status, body) =
        post_json(&hook, "tasks.task.complete", json!({"taskId": controlled})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["task"]["status"], "4");
    assert!(body["result"]["task"]["closedBy"].is_null());
    let (_, body) = post_json(
        &hook,
        "tasks.task.list",
        json!({"filter": {"!REAL_STATUS": 5, "ID": controlled}, "select": ["ID", "STATUS"]}),
    )
    .await;
    assert_eq!(body["result"]["tasks"][0]["status"], "4", "{body}");
}

#[tokio::test]
async fn deals_are_listed_by_company_or_by_primary_contact_with_a_narrow_select() {
    let b24 = B24Emulator::start().await;
    let hook = b24.webhook_url();
    let first = b24.seed_deal(json!({"TITLE": "Первая", "COMPANY_ID": 11, "CONTACT_IDS": [203]}));
    let second =
        b24.seed_deal(json!({"TITLE": "Вторая", "COMPANY_ID": 11, "CONTACT_IDS": [201, 203]}));
    b24.seed_deal(json!({"TITLE": "Чужая", "COMPANY_ID": 12, "CONTACT_IDS": [202]}));

    let list = |filter: Value| {
        let hook = hook.clone();
        async move {
            let (status, body) = post_json(
                &hook,
                "crm.deal.list",
                json!({"filter": filter, "select": ["ID", "STAGE_ID", "OPPORTUNITY"],
                       "order": {"ID": "ASC"}}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let body = list(json!({"COMPANY_ID": 11})).await;
    assert_eq!(body["total"], 2);
    let rows = body["result"].as_array().unwrap();
    assert_eq!(rows[0]["ID"], first.to_string());
    assert_eq!(rows[1]["ID"], second.to_string());
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["ID", "OPPORTUNITY", "STAGE_ID"],
        "only what was selected"
    );

    // `CONTACT_ID` is the primary contact: 203 is only the second one of `second`.
    let body = list(json!({"CONTACT_ID": 203})).await;
    assert_eq!(body["result"].as_array().unwrap().len(), 1);
    assert_eq!(body["result"][0]["ID"], first.to_string());
    let body = list(json!({"CONTACT_ID": "201"})).await;
    assert_eq!(body["result"][0]["ID"], second.to_string());
    let body = list(json!({"COMPANY_ID": 13})).await;
    assert_eq!(
        (body["total"].clone(), body["result"].clone()),
        (json!(0), json!([]))
    );
}
