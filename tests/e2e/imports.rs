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
        json!({"rows": 4, "imported": 4, "skipped": 0, "members_created": 2, "points_earned": 0})
    );
    // The same file again: nothing new. One more row: only it.
    let (status, again) = post_import(&t, &prog.admin, shop.id, "csv", CSV).await;
    assert_eq!(status, 200);
    assert_eq!(
        again,
        json!({"rows": 4, "imported": 0, "skipped": 4, "members_created": 0, "points_earned": 0})
    );
    let more = format!("{CSV}c-3,2024-03-01,7.25,south\n");
    let (_, more) = post_import(&t, &prog.admin, shop.id, "csv", &more).await;
    assert_eq!(
        more,
        json!({"rows": 5, "imported": 1, "skipped": 4, "members_created": 1, "points_earned": 0})
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
        json!({"rows": 5, "imported": 5, "skipped": 0, "members_created": 3, "points_earned": 0})
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

/// The FNV-1a reference imports used to give a row (`import:<hash>:<n>`): anyone could
/// compute it from a candidate row.
fn unkeyed_ref(row: &str, n: u32) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in row.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("import:{:08x}:{:08x}:{n}", hash >> 32, hash & 0xffff_ffff)
}

async fn member_by_ref(t: &TestApp, programme: Uuid, customer: &str) -> Option<Uuid> {
    use coalition_store::entities::member;
    member::Entity::find()
        .filter(member::Column::ProgrammeId.eq(programme))
        .filter(member::Column::ExternalRef.eq(customer))
        .one(&t.app.db)
        .await
        .unwrap()
        .map(|m| m.id)
}

async fn purchases_on(
    t: &TestApp,
    account: Uuid,
) -> Vec<coalition_store::entities::purchase::Model> {
    use coalition_store::entities::purchase;
    purchase::Entity::find()
        .filter(purchase::Column::AccountId.eq(account))
        .all(&t.app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_erased_customers_import_reference_cannot_be_recomputed_from_a_candidate_row() {
    let t = spawn_app().await;
    let prog = t.programme("Private imports").await;
    let shop = t.partner(&prog, "CDNOW", "1").await;
    let file = " 00001 19970101  1   11.77\n 00002 19970112  2   20.00\n";
    let (status, _) = post_import(&t, &prog.admin, shop.id, "cdnow", file).await;
    assert_eq!(status, 200);
    let member = member_by_ref(&t, prog.id, "00001").await.unwrap();
    t.call(
        reqwest::Method::DELETE,
        &format!("/v1/members/{member}"),
        Some(&prog.admin),
        None,
        None,
    )
    .await
    .expect(204);
    // A partner that knows the erased customer's number, day and amount hashes the row.
    let listed = t
        .get(
            &format!("/v1/purchases?partner_id={}&limit=100", shop.id),
            &shop.token,
        )
        .await
        .expect(200);
    let refs: Vec<String> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["external_ref"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(refs.len(), 2, "{listed}");
    let guess = unkeyed_ref("cdnow|00001|1997-01-01|1|11.77", 1);
    assert!(
        !refs.contains(&guess),
        "{guess} names the erased customer's purchase"
    );
    assert!(refs
        .iter()
        .all(|r| r.starts_with("import:") && !r.contains("00001")));
    // Resumable still: the same file again skips everything, erased customer included.
    let (status, again) = post_import(&t, &prog.admin, shop.id, "cdnow", file).await;
    assert_eq!(status, 200);
    assert_eq!(
        again,
        json!({"rows": 2, "imported": 0, "skipped": 2, "members_created": 0, "points_earned": 0})
    );
}

/// Every import journal entry is named by purchases, as many as its reason says.
async fn assert_import_entries_true(t: &TestApp, programme: Uuid) {
    use coalition_store::entities::{journal_entry, purchase};
    let entries = journal_entry::Entity::find()
        .filter(journal_entry::Column::ProgrammeId.eq(programme))
        .filter(journal_entry::Column::Kind.eq("purchase"))
        .all(&t.app.db)
        .await
        .unwrap();
    for e in entries {
        let named = purchase::Entity::find()
            .filter(purchase::Column::EntryId.eq(e.id))
            .count(&t.app.db)
            .await
            .unwrap();
        assert!(named > 0, "entry {} ({}) names no purchase", e.id, e.reason);
        assert!(
            e.reason
                .starts_with(&format!("Import of {named} historical")),
            "entry {} says '{}' but {named} purchases name it",
            e.id,
            e.reason
        );
    }
}

#[tokio::test]
async fn two_imports_of_the_same_rows_at_once_write_each_row_once_and_no_empty_entry() {
    let t = spawn_app().await;
    let prog = t.programme("Racing imports").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    // Half of the customers exist already.
    let mut first = String::from("customer_ref,date,amount\n");
    for c in 0..150 {
        first += &format!("c-{c},2023-01-01,1.00\n");
    }
    let (status, _) = post_import(&t, &prog.admin, shop.id, "csv", &first).await;
    assert_eq!(status, 200);
    let mut file = String::from("customer_ref,date,amount\n");
    for i in 0..2500 {
        file += &format!(
            "c-{},2024-{:02}-{:02},{}.00\n",
            i % 300,
            1 + i % 12,
            1 + i % 28,
            i
        );
    }
    let (a, b) = (spawn_client(&t.base), spawn_client(&t.base));
    let (ra, rb) = tokio::join!(
        post_import(&a, &prog.admin, shop.id, "csv", &file),
        post_import(&b, &prog.admin, shop.id, "csv", &file)
    );
    assert_eq!((ra.0, rb.0), (200, 200), "{} {}", ra.1, rb.1);
    let imported = ra.1["imported"].as_u64().unwrap() + rb.1["imported"].as_u64().unwrap();
    assert_eq!(imported, 2500, "{} {}", ra.1, rb.1);
    let created =
        ra.1["members_created"].as_u64().unwrap() + rb.1["members_created"].as_u64().unwrap();
    assert_eq!(created, 150, "{} {}", ra.1, rb.1);
    assert_eq!(purchases_of(&t, prog.id).await, 2650);
    assert_import_entries_true(&t, prog.id).await;
}

#[tokio::test]
async fn an_imported_purchase_is_not_refundable_with_its_own_problem() {
    let t = spawn_app().await;
    let prog = t.programme("Refund imports").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (status, _) = post_import(&t, &prog.admin, shop.id, "csv", CSV).await;
    assert_eq!(status, 200);
    let listed = t
        .get(
            &format!("/v1/purchases?partner_id={}&limit=1", shop.id),
            &shop.token,
        )
        .await
        .expect(200);
    let id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let problem = t
        .post_moving(
            &format!("/v1/purchases/{id}/refunds"),
            &shop.token,
            json!({"amount": {"amount": "1.00", "currency": "EUR"}}),
        )
        .await
        .expect_problem(409, "imported_purchase_not_refundable");
    assert!(
        problem["detail"].as_str().unwrap().contains("imported"),
        "{problem}"
    );
}

#[tokio::test]
async fn an_import_never_adds_purchases_to_a_member_erased_meanwhile() {
    use coalition_store::entities::{member, point_account};
    use sea_orm::{ActiveValue::Set, QuerySelect, TransactionTrait};
    let t = spawn_app().await;
    let prog = t.programme("Erasure imports").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (status, _) = post_import(&t, &prog.admin, shop.id, "csv", CSV).await;
    assert_eq!(status, 200);
    let c1 = member::Entity::find_by_id(member_by_ref(&t, prog.id, "c-1").await.unwrap())
        .one(&t.app.db)
        .await
        .unwrap()
        .unwrap();
    let later = "customer_ref,date,amount\nc-1,2024-05-01,9.00\nc-1,2024-05-02,8.00\n";
    if backend_name() == "postgres" {
        // An erasure in flight: it holds the account's lock (its first step) while the
        // import reads the member, then erases her and commits.
        let txn = t.app.db.begin().await.unwrap();
        point_account::Entity::find_by_id(c1.account_id)
            .lock_exclusive()
            .one(&txn)
            .await
            .unwrap()
            .unwrap();
        let client = spawn_client(&t.base);
        let (admin, shop_id) = (prog.admin.clone(), shop.id);
        let later_import =
            tokio::spawn(async move { post_import(&client, &admin, shop_id, "csv", later).await });
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        let now = chrono::Utc::now();
        let mut account: point_account::ActiveModel =
            point_account::Entity::find_by_id(c1.account_id)
                .one(&txn)
                .await
                .unwrap()
                .unwrap()
                .into();
        account.closed_at = Set(Some(now));
        point_account::Entity::update(account)
            .exec(&txn)
            .await
            .unwrap();
        let mut erased: member::ActiveModel = c1.clone().into();
        erased.external_ref = Set(None);
        erased.erased_at = Set(Some(now));
        member::Entity::update(erased).exec(&txn).await.unwrap();
        txn.commit().await.unwrap();
        let (status, report) = later_import.await.unwrap();
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["members_created"], 1, "{report}");
    } else {
        // SQLite runs one writer at a time: the erasure comes first or after.
        t.call(
            reqwest::Method::DELETE,
            &format!("/v1/members/{}", c1.id),
            Some(&prog.admin),
            None,
            None,
        )
        .await
        .expect(204);
        let (status, report) = post_import(&t, &prog.admin, shop.id, "csv", later).await;
        assert_eq!((status, report["members_created"].clone()), (200, json!(1)));
    }
    assert_eq!(
        purchases_on(&t, c1.account_id).await.len(),
        3,
        "no purchase added to the erased member"
    );
    let fresh = member_by_ref(&t, prog.id, "c-1")
        .await
        .expect("a new member c-1");
    assert_ne!(fresh, c1.id);
    let fresh = member::Entity::find_by_id(fresh)
        .one(&t.app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(purchases_on(&t, fresh.account_id).await.len(), 2);
}

#[tokio::test]
async fn an_earning_import_credits_the_points_of_each_day_once_and_the_ledger_balances() {
    use coalition_store::entities::{point_lot, posting};
    let t = spawn_app().await;
    let prog = t.programme("Earning imports").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    // A bonus valid in January 2024 only, paid by the operator.
    t.post(
        "/v1/rules",
        &prog.admin,
        json!({"name": "January bonus", "effect": {"kind": "bonus_points", "value": "5"},
               "valid_from": "2024-01-01T00:00:00Z", "valid_to": "2024-02-01T00:00:00Z",
               "funder": {"kind": "operator"}}),
    )
    .await
    .expect(201);
    let file = "customer_ref,date,amount\n\
        c-1,2024-01-05,10.00\n\
        c-1,2024-02-05,12.50\n\
        c-2,2024-01-07,5\n\
        c-2,2024-03-01,0.99\n";
    let earn = |body: &'static str| {
        let t = &t;
        let admin = prog.admin.clone();
        async move {
            let res = t
                .http
                .post(format!(
                    "{}/v1/imports/purchases?partner_id={}&format=csv&earn=true",
                    t.base, shop.id
                ))
                .bearer_auth(admin)
                .header("Content-Type", "text/csv")
                .body(body)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    // c-1: 10 base + 5 January bonus, then 12.5 base → 12 (rounded down once): 27.
    // c-2: 5 base + 5 bonus, then 0.99 base → 0: 10.
    let (status, report) = earn(file).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"rows": 4, "imported": 4, "skipped": 0, "members_created": 2, "points_earned": 37})
    );
    let c1 = member_by_ref(&t, prog.id, "c-1").await.unwrap().to_string();
    let c2 = member_by_ref(&t, prog.id, "c-2").await.unwrap().to_string();
    assert_eq!(t.points(&prog.admin, &c1).await, 27);
    assert_eq!(t.points(&prog.admin, &c2).await, 10);
    // Again: nothing twice.
    let (status, again) = earn(file).await;
    assert_eq!(status, 200);
    assert_eq!(
        (again["imported"].clone(), again["points_earned"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(t.points(&prog.admin, &c1).await, 27);
    // The points came from the shop (10 + 12 + 5) and the operator (2 × 5), all postings.
    let postings = posting::Entity::find()
        .filter(posting::Column::ProgrammeId.eq(prog.id))
        .all(&t.app.db)
        .await
        .unwrap();
    assert_eq!(postings.iter().map(|p| p.amount).sum::<i64>(), 0);
    let of = |kind: &str| -> i64 {
        postings
            .iter()
            .filter(|p| p.account_kind == kind)
            .map(|p| p.amount)
            .sum()
    };
    assert_eq!(
        (of("partner_issued"), of("operator_funding"), of("member")),
        (-27, -10, 37)
    );
    // The points live from the import on, not from 2024.
    let lots = point_lot::Entity::find()
        .filter(point_lot::Column::ProgrammeId.eq(prog.id))
        .all(&t.app.db)
        .await
        .unwrap();
    assert_eq!(lots.iter().map(|l| l.points_remaining).sum::<i64>(), 37);
    assert!(lots
        .iter()
        .all(|l| l.expires_at > chrono::Utc::now() + chrono::Duration::days(300)));
    assert_accounts_consistent(&t.app.db, prog.id).await;
    // An earn flag that is not a boolean.
    let res = t
        .http
        .post(format!(
            "{}/v1/imports/purchases?partner_id={}&earn=yes",
            t.base, shop.id
        ))
        .bearer_auth(&prog.admin)
        .header("Content-Type", "text/csv")
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
}
