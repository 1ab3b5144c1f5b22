//! Isolation: a user sees and changes only their own rows (another user's row
//! is a 404, another user's client a 422); an admin — a token with role admin
//! for a user whose stored role is admin — sees and changes all.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// B's client, meeting (linked to the client) and pipeline entry.
async fn rows_of(app: &TestApp, tok: &str, tag: &str) -> (Value, Value, Value) {
    let (s, c) = app.post("/api/clients", tok, &json!({"name": format!("{tag} client"), "email": format!("{tag}@example.com")})).await;
    assert_eq!(s, 201, "{c}");
    let (s, m) = app
        .post(
            "/api/meetings",
            tok,
            &json!({"title": format!("{tag} meeting"), "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z", "client_id": c["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{m}");
    let (s, d) = app.post("/api/pipeline", tok, &json!({"title": format!("{tag} deal"), "client_id": c["id"]})).await;
    assert_eq!(s, 201, "{d}");
    (c, m, d)
}

fn ids(list: &Value) -> Vec<i64> {
    list["items"].as_array().expect("items").iter().map(|r| r["id"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn users_cannot_see_or_change_each_others_rows() {
    let app = spawn_app().await;
    let (_a, a) = app.add_user("a@example.com", "user");
    let (_b, b) = app.add_user("b@example.com", "user");
    let (ac, am, ad) = rows_of(&app, &a, "a").await;
    let (bc, bm, bd) = rows_of(&app, &b, "b").await;
    let before = app.changes().len();

    for (table, row) in [("clients", &bc), ("meetings", &bm), ("pipeline", &bd)] {
        let path = format!("/api/{table}/{}", row["id"]);
        let (s, e) = app.get(&path, &a).await;
        assert_eq!((s, e["error"].as_str()), (404, Some("not_found")), "GET {path}: {e}");
        let (s, e) = app.patch(&path, &a, &json!({"notes": "mine now"})).await;
        assert_eq!((s, e["error"].as_str()), (404, Some("not_found")), "PATCH {path}: {e}");
        let (s, e) = app.delete(&path, &a).await;
        assert_eq!((s, e["error"].as_str()), (404, Some("not_found")), "DELETE {path}: {e}");
        // The owner still sees the row untouched.
        let (s, still) = app.get(&path, &b).await;
        assert_eq!(s, 200);
        assert_eq!(&still, row, "B's {table} row is unchanged");
    }
    // A 404 for someone else's row reads the same as for a row that does not exist.
    let (_, missing) = app.get("/api/clients/999999", &a).await;
    let (_, foreign) = app.get(&format!("/api/clients/{}", bc["id"]), &a).await;
    assert_eq!(missing["error"], foreign["error"]);

    // Lists show only one's own rows.
    for (table, mine, theirs) in [("clients", &ac, &bc), ("meetings", &am, &bm), ("pipeline", &ad, &bd)] {
        let (s, l) = app.get(&format!("/api/{table}"), &a).await;
        assert_eq!(s, 200);
        assert_eq!(ids(&l), vec![mine["id"].as_i64().unwrap()], "A's {table}");
        let (s, l) = app.get(&format!("/api/{table}"), &b).await;
        assert_eq!(s, 200);
        assert_eq!(ids(&l), vec![theirs["id"].as_i64().unwrap()], "B's {table}");
    }
    let (_, l) = app.get(&format!("/api/meetings?client_id={}", bc["id"]), &a).await;
    assert_eq!(ids(&l), Vec::<i64>::new(), "filtering by B's client shows A nothing");

    assert_eq!(app.changes().len(), before, "refused requests wrote nothing");
}

#[tokio::test]
async fn another_users_client_cannot_be_referenced() {
    let app = spawn_app().await;
    let (_a, a) = app.add_user("a@example.com", "user");
    let (b_id, b) = app.add_user("b@example.com", "user");
    let (_ac, am, ad) = rows_of(&app, &a, "a").await;
    let (bc, _, _) = rows_of(&app, &b, "b").await;
    let before = app.changes().len();
    let counts = |app: &TestApp| -> (i64, i64, i64) {
        let db = app.db();
        let n = |t: &str| db.count(t);
        (n("clients"), n("meetings"), n("pipeline"))
    };
    let rows_before = counts(&app);

    let (s, e) = app
        .post(
            "/api/meetings",
            &a,
            &json!({"title": "x", "starts_at": "2026-11-23T10:00:00Z", "ends_at": "2026-11-23T11:00:00Z", "client_id": bc["id"]}),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    let (s, e) = app.post("/api/pipeline", &a, &json!({"title": "x", "client_id": bc["id"]})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    let (s, e) = app.patch(&format!("/api/meetings/{}", am["id"]), &a, &json!({"client_id": bc["id"]})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    let (s, e) = app.patch(&format!("/api/pipeline/{}", ad["id"]), &a, &json!({"client_id": bc["id"]})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    // A client id that does not exist at all is refused the same way.
    let (s, e) = app.post("/api/pipeline", &a, &json!({"title": "x", "client_id": 987654})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    // Nor may a user create rows owned by someone else.
    let (s, e) = app.post("/api/clients", &a, &json!({"name": "sneaky", "user_id": b_id})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");

    assert_eq!(app.changes().len(), before, "nothing logged");
    assert_eq!(counts(&app), rows_before, "nothing written");
    let (_, m) = app.get(&format!("/api/meetings/{}", am["id"]), &a).await;
    assert_eq!(m, am, "A's meeting still points at A's client");
}

#[tokio::test]
async fn admin_sees_and_changes_everything() {
    let app = spawn_app().await;
    let (a_id, a) = app.add_user("a@example.com", "user");
    let (b_id, b) = app.add_user("b@example.com", "user");
    let (_root_id, root) = app.add_user("root@example.com", "admin");
    let (ac, am, ad) = rows_of(&app, &a, "a").await;
    let (bc, bm, bd) = rows_of(&app, &b, "b").await;

    for (table, x, y) in [("clients", &ac, &bc), ("meetings", &am, &bm), ("pipeline", &ad, &bd)] {
        let (s, l) = app.get(&format!("/api/{table}"), &root).await;
        assert_eq!(s, 200);
        let mut want = vec![x["id"].as_i64().unwrap(), y["id"].as_i64().unwrap()];
        want.sort();
        assert_eq!(ids(&l), want, "admin lists every user's {table}");
        let (s, got) = app.get(&format!("/api/{table}/{}", y["id"]), &root).await;
        assert_eq!(s, 200);
        assert_eq!(&got, y);
    }

    // Patching someone's row keeps its owner.
    let (s, p) = app.patch(&format!("/api/clients/{}", bc["id"]), &root, &json!({"notes": "checked by admin"})).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["notes"], "checked by admin");
    assert_eq!(p["user_id"], b_id);
    let (_, seen_by_b) = app.get(&format!("/api/clients/{}", bc["id"]), &b).await;
    assert_eq!(seen_by_b, p);
    let last = app.changes().pop().unwrap();
    assert_eq!(last.4, b_id, "the change is logged under the row's owner, not the admin");

    // Admin may create rows for a user, and only with that user's clients.
    let (s, d) = app.post("/api/pipeline", &root, &json!({"title": "for A", "user_id": a_id, "client_id": ac["id"]})).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["user_id"], a_id);
    let (s, e) = app.post("/api/pipeline", &root, &json!({"title": "mixed", "user_id": a_id, "client_id": bc["id"]})).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("unprocessable")), "{e}");
    let (s, _) = app.get(&format!("/api/pipeline/{}", d["id"]), &a).await;
    assert_eq!(s, 200, "A sees the row the admin made for A");

    let (s, _) = app.delete(&format!("/api/meetings/{}", am["id"]), &root).await;
    assert_eq!(s, 204);
    let (s, _) = app.get(&format!("/api/meetings/{}", am["id"]), &a).await;
    assert_eq!(s, 404, "gone for its owner too");
}

#[tokio::test]
async fn an_admin_claim_for_a_plain_user_grants_nothing() {
    let app = spawn_app().await;
    let (a_id, _a) = app.add_user("a@example.com", "user");
    let (b_id, b) = app.add_user("b@example.com", "user");
    let (bc, bm, _) = rows_of(&app, &b, "b").await;
    // Signed with the real secret, but A's stored role is `user`.
    let forged = app.token_for(a_id, "admin", 3600);
    let (s, l) = app.get("/api/clients", &forged).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&l), Vec::<i64>::new(), "no other user's rows");
    let (s, _) = app.get(&format!("/api/clients/{}", bc["id"]), &forged).await;
    assert_eq!(s, 404);
    let (s, _) = app.patch(&format!("/api/meetings/{}", bm["id"]), &forged, &json!({"notes": "x"})).await;
    assert_eq!(s, 404);
    let (s, _) = app.delete(&format!("/api/meetings/{}", bm["id"]), &forged).await;
    assert_eq!(s, 404);
    let (s, e) = app.post("/api/clients", &forged, &json!({"name": "x", "user_id": b_id})).await;
    assert_eq!(s, 422, "{e}");

    // The reverse: an admin user with a token that does not claim admin is a plain user.
    let (root_id, _) = app.add_user("root@example.com", "admin");
    let plain = app.token_for(root_id, "user", 3600);
    let (s, l) = app.get("/api/clients", &plain).await;
    assert_eq!(s, 200);
    assert_eq!(ids(&l), Vec::<i64>::new());
}
