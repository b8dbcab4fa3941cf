//! Historical purchases in: `POST /v1/imports/purchases` and `coalition import purchases`.

use crate::support::*;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use uuid::Uuid;

/// Posts `body` as text/csv to the import route; (status, JSON body).
pub async fn post_import(
    t: &Client,
    token: &str,
    partner: Uuid,
    format: &str,
    body: &str,
) -> (u16, Value) {
    let res = t
        .http
        .post(format!(
            "{}/v1/imports/purchases?partner_id={partner}&format={format}",
            t.base
        ))
        .bearer_auth(token)
        .header("Content-Type", "text/csv")
        .body(body.to_owned())
        .send()
        .await
        .expect("import");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = res.json().await.expect("JSON answer");
    if status >= 400 {
        assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    }
    (status, body)
}

async fn purchases_of(t: &TestApp, programme: Uuid) -> u64 {
    use coalition_store::entities::purchase;
    purchase::Entity::find()
        .filter(purchase::Column::ProgrammeId.eq(programme))
        .count(&t.app.db)
        .await
        .unwrap()
}

const CSV: &str = "customer_ref,date,amount,store_ref\n\
    c-1,2024-01-05,10.00,north\n\
    c-1,2024-02-05,12.50,north\n\
    c-2,2024-01-07,5,\n\
    c-1,2024-02-05,12.50,north\n";

#[tokio::test]
async fn a_csv_history_is_imported_once_without_points_and_members_are_found_by_ref() {
    let t = spawn_app().await;
    let prog = t.programme("Imports").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (status, report) = post_import(&t, &prog.admin, shop.id, "csv", CSV).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"rows": 4, "imported": 4, "skipped": 0, "members_created": 2})
    );
    // The same file again: nothing new. One more row: only it.
    let (status, again) = post_import(&t, &prog.admin, shop.id, "csv", CSV).await;
    assert_eq!(status, 200);
    assert_eq!(
        again,
        json!({"rows": 4, "imported": 0, "skipped": 4, "members_created": 0})
    );
    let more = format!("{CSV}c-3,2024-03-01,7.25,south\n");
    let (_, more) = post_import(&t, &prog.admin, shop.id, "csv", &more).await;
    assert_eq!(
        more,
        json!({"rows": 5, "imported": 1, "skipped": 4, "members_created": 1})
    );
    assert_eq!(purchases_of(&t, prog.id).await, 5);

    // The purchases keep their day, earn nothing, and the partner sees its customers.
    let listed = t
        .get(
            &format!("/v1/purchases?partner_id={}&limit=100", shop.id),
            &prog.admin,
        )
        .await
        .expect(200);
    let rows = listed["data"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter().all(|p| p["points_earned"] == json!(0)),
        "{listed}"
    );
    use coalition_store::entities::{member, posting, purchase};
    let c1 = member::Entity::find()
        .filter(member::Column::ProgrammeId.eq(prog.id))
        .filter(member::Column::ExternalRef.eq("c-1"))
        .one(&t.app.db)
        .await
        .unwrap()
        .expect("member c-1");
    let theirs = purchase::Entity::find()
        .filter(purchase::Column::AccountId.eq(c1.account_id))
        .all(&t.app.db)
        .await
        .unwrap();
    assert_eq!(theirs.len(), 3);
    let mut days: Vec<String> = theirs
        .iter()
        .map(|p| p.occurred_at.unwrap().date_naive().to_string())
        .collect();
    days.sort();
    assert_eq!(days, ["2024-01-05", "2024-02-05", "2024-02-05"]);
    assert!(theirs
        .iter()
        .all(|p| p.store_ref.as_deref() == Some("north")));
    // No posting: settlement charges no one for history.
    let postings = posting::Entity::find()
        .filter(posting::Column::ProgrammeId.eq(prog.id))
        .count(&t.app.db)
        .await
        .unwrap();
    assert_eq!(postings, 0);
    assert_eq!(t.points(&shop.token, &c1.id.to_string()).await, 0);
}

#[tokio::test]
async fn a_bad_row_names_its_line_and_nothing_is_imported() {
    let t = spawn_app().await;
    let prog = t.programme("Bad imports").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let body =
        "customer_ref,date,amount\nc-1,2024-01-05,10.00\nc-2,2024-01-06,ten\nc-3,2024-01-07,1\n";
    let (status, problem) = post_import(&t, &prog.admin, shop.id, "csv", body).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "invalid_import_row");
    assert_eq!(problem["line"], 3);
    assert!(
        problem["detail"].as_str().unwrap().contains("line 3"),
        "{problem}"
    );
    assert_eq!(purchases_of(&t, prog.id).await, 0);
    // A cdnow row with a bad date, after a good one.
    let body = " 00001 19970101  1   11.77\n 00002 19971301  1   12.00\n";
    let (status, problem) = post_import(&t, &prog.admin, shop.id, "cdnow", body).await;
    assert_eq!((status, problem["line"].clone()), (422, json!(2)));
    assert_eq!(purchases_of(&t, prog.id).await, 0);
    // A card number as a customer reference is never kept (a CSV body is not JSON).
    let body = "customer_ref,date,amount\nc-1,2024-01-05,10.00\n4111 1111 1111 1111,2024-01-06,1\n";
    let (status, problem) = post_import(&t, &prog.admin, shop.id, "csv", body).await;
    assert_eq!(
        (status, problem["line"].clone()),
        (422, json!(3)),
        "{problem}"
    );
    assert!(!problem.to_string().contains("4111"), "{problem}");
    assert_eq!(purchases_of(&t, prog.id).await, 0);
    // Unknown format, missing partner, a partner of another programme.
    let (status, problem) = post_import(&t, &prog.admin, shop.id, "xls", "").await;
    assert_eq!(
        (status, problem["code"].clone()),
        (422, json!("validation_failed"))
    );
    let (status, problem) = post_import(&t, &prog.admin, Uuid::now_v7(), "csv", CSV).await;
    assert_eq!((status, problem["code"].clone()), (404, json!("not_found")));
    // Not text/csv.
    let res = t
        .http
        .post(format!(
            "{}/v1/imports/purchases?partner_id={}",
            t.base, shop.id
        ))
        .bearer_auth(&prog.admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
}

#[tokio::test]
async fn a_partner_may_not_import() {
    let t = spawn_app().await;
    let prog = t.programme("Partner imports").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (status, problem) = post_import(&t, &shop.token, shop.id, "csv", CSV).await;
    assert_eq!(
        (status, problem["code"].clone()),
        (403, json!("insufficient_scope"))
    );
    assert_eq!(purchases_of(&t, prog.id).await, 0);
}

#[tokio::test]
async fn the_cli_imports_a_cdnow_file_and_skips_it_the_second_time() {
    let env = [("DATABASE_URL", fresh_database_url().await)];
    let server = start_server(&env).await;
    let client = spawn_client(&server.base);
    let prog = create_programme(&env, &client).await;
    let shop = client.partner(&prog, "CDNOW", "1").await;
    let dir = std::env::temp_dir().join(format!("coalition-import-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cdnow.txt");
    std::fs::write(
        &file,
        " customer_id  date number_of_cds  dollar_value\n\
         00001 19970101  1   11.77\n\
         00002 19970112  1   12.00\n\
         00002 19970112  5   77.00\n\
         00003 19970102  2   20.76\n\
         00003 19970330  2   20.76\n",
    )
    .unwrap();
    let run = |file: &std::path::Path| {
        coalition(&env)
            .args([
                "import",
                "purchases",
                "--programme-id",
                &prog.id.to_string(),
            ])
            .args(["--partner-id", &shop.id.to_string(), "--format", "cdnow"])
            .arg(file)
            .output()
            .unwrap()
    };
    let first = run(&file);
    assert!(first.status.success(), "{first:?}");
    let report: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        report,
        json!({"rows": 5, "imported": 5, "skipped": 0, "members_created": 3})
    );
    let second: Value = serde_json::from_slice(&run(&file).stdout).unwrap();
    assert_eq!(second["imported"], 0);
    assert_eq!(second["skipped"], 5);
    // A bad line: the file and line on stderr, a failure status.
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, " 00009 19970101  1   11.77\n 00009 1997 1 1\n").unwrap();
    let failed = run(&bad);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("bad.txt:2:"), "{stderr}");
    let listed = client
        .get(
            &format!("/v1/purchases?partner_id={}&limit=100", shop.id),
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 5);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_byte_order_mark_is_no_part_of_a_customer_and_underscored_amounts_are_refused() {
    let t = spawn_app().await;
    let prog = t.programme("Odd files").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (status, _) = post_import(
        &t,
        &prog.admin,
        shop.id,
        "cdnow",
        "\u{feff}00001 19970101 1 11.77\n",
    )
    .await;
    assert_eq!(status, 200);
    let (status, report) = post_import(
        &t,
        &prog.admin,
        shop.id,
        "cdnow",
        "00001 19970102 1 11.77\n",
    )
    .await;
    assert_eq!(
        (status, report["members_created"].clone()),
        (200, json!(0)),
        "{report}"
    );
    let with_header =
        "\u{feff}customer_id date number_of_cds dollar_value\n00001 19970103 1 11.77\n";
    let (status, report) = post_import(&t, &prog.admin, shop.id, "cdnow", with_header).await;
    assert_eq!(status, 200, "{report}");
    let body = "customer_ref,date,amount\nc1,2024-01-05,1_0.0_0\n";
    let (status, problem) = post_import(&t, &prog.admin, shop.id, "csv", body).await;
    assert_eq!(
        (status, problem["code"].clone()),
        (422, json!("invalid_import_row")),
        "{problem}"
    );
}
