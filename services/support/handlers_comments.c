/* Comments: AddComment and ListComments. Internal notes are written by staff
 * only and read by staff only: every customer read filters them out in SQL. */
#include "onceiot/pbtime.h"
#include "support.h"

#include <string.h>

#define BODY_MAX     10000
#define LIST_DEFAULT 100
#define LIST_MAX     1000
#define COMMENT_COLUMNS                                                                            \
    "id, ticket_id, author_id, author_is_staff, visibility, body, "                                \
    "(extract(epoch FROM created_at) * 1000000)::bigint AS created_us"

static support_comment_t *support__comment_from_row(arena_t *a, const PGresult *res, int row)
{
    support_comment_t *c = arena_alloc(a, sizeof(*c));
    onceiot__support__v1__comment__init(c);
    c->id = db_get_int(res, row, "id", 0);
    c->ticket_id = db_get_int(res, row, "ticket_id", 0);
    c->author_id = db_get_int(res, row, "author_id", 0);
    c->author_is_staff = db_get_bool(res, row, "author_is_staff");
    c->visibility = strcmp(db_get(res, row, "visibility"), "internal") == 0
                        ? ONCEIOT__SUPPORT__V1__COMMENT_VISIBILITY__COMMENT_VISIBILITY_INTERNAL
                        : ONCEIOT__SUPPORT__V1__COMMENT_VISIBILITY__COMMENT_VISIBILITY_PUBLIC;
    const char *body = db_get(res, row, "body");
    c->body = arena_strdup(a, body ? body : "");
    c->created_at = pbtime_from_us_text(a, db_get(res, row, "created_us"));
    return c;
}

static const db_stmt_t insert_comment = {
    "support_insert_comment",
    "INSERT INTO ticket_comments (ticket_id, organization_id, author_id, author_is_staff, "
    "visibility, body) VALUES ($1, $2, $3, $4, $5, $6) RETURNING " COMMENT_COLUMNS,
    6};

/* The first public staff reply is the ticket's first response. */
static const db_stmt_t first_response = {
    "support_first_response",
    "UPDATE tickets SET first_response_at = now() WHERE id = $1 AND first_response_at IS NULL", 1};

int support_add_comment(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__AddCommentRequest *r = (const void *)req;
    support_ctx_t cx;
    int rc = support_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    support_valid_id(call, "ticket_id", r->ticket_id);
    support_valid_text(call, "body", r->body, 1, BODY_MAX);
    bool internal =
        r->visibility == ONCEIOT__SUPPORT__V1__COMMENT_VISIBILITY__COMMENT_VISIBILITY_INTERNAL;
    if (r->visibility < 0 ||
        r->visibility > ONCEIOT__SUPPORT__V1__COMMENT_VISIBILITY__COMMENT_VISIBILITY_INTERNAL)
        rpc_violation(call, "visibility", "unknown visibility %d", (int)r->visibility);
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    if (internal && !cx.staff)
        return rpc_fail(call, ERR_PERMISSION_DENIED, "only staff write internal notes");
    support_locked_t lk;
    if ((rc = support_begin_lock_or_status(&cx, r->ticket_id, &lk)) < 0)
        return rc;
    if (strcmp(lk.status, "closed") == 0)
        return rpc_fail(call, ERR_FAILED_PRECONDITION, "ticket %lld is closed",
                        (long long)r->ticket_id);
    const char *params[] = {
        lk.id,  lk.org, cx.actor, cx.staff ? "true" : "false", internal ? "internal" : "public",
        r->body};
    PGresult *res = NULL;
    if ((rc = support_exec(&cx, &insert_comment, params, &res)) < 0)
        return rc;
    support_comment_t *c = support__comment_from_row(cx.a, res, 0);
    PQclear(res);
    if (cx.staff && !internal && (rc = support_exec(&cx, &first_response, &lk.id, NULL)) < 0)
        return rc;
    if ((rc = svc_commit_or_status(call)) < 0)
        return rc;
    *resp = &c->base;
    return 0;
}

static const db_stmt_t ticket_visible = {
    "support_ticket_visible",
    "SELECT 1 FROM tickets WHERE id = $1 AND ($2::bigint IS NULL OR organization_id = $2)", 2};

static const db_stmt_t list_comments = {
    "support_list_comments",
    "SELECT " COMMENT_COLUMNS " FROM ticket_comments WHERE ticket_id = $1 "
    "AND ($2::bool OR visibility = 'public') AND ($3::bigint IS NULL OR id > $3) "
    "ORDER BY id LIMIT $4",
    4};

int support_list_comments(rpc_call_t *call, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
    const Onceiot__Support__V1__ListCommentsRequest *r = (const void *)req;
    support_ctx_t cx;
    int rc = support_ctx_or_status(call, &cx);
    if (rc < 0)
        return rc;
    support_valid_id(call, "ticket_id", r->ticket_id);
    int size = pagetoken_page_size(call, r->page_size, LIST_DEFAULT, LIST_MAX);
    const char *id = support_i64(&cx, r->ticket_id);
    const char *hash_parts[] = {"comments", id, cx.staff ? "staff" : "customer"};
    uint64_t hash = pagetoken_hash(hash_parts, 3);
    const char *after = NULL, *unused = NULL;
    if (*r->page_token && (rc = pagetoken_decode(call, r->page_token, hash, &after, &unused)) < 0)
        return rc;
    if ((rc = rpc_check_violations(call)) < 0)
        return rc;
    const char *vp[] = {id, cx.org};
    if ((rc = support_exec(&cx, &ticket_visible, vp, NULL)) < 0)
        return rc;
    if (rc == 0)
        return rpc_fail(call, ERR_NOT_FOUND, "no ticket %lld", (long long)r->ticket_id);
    const char *params[] = {id, cx.staff ? "true" : "false", after, support_i64(&cx, size + 1)};
    PGresult *res = NULL;
    if ((rc = support_exec(&cx, &list_comments, params, &res)) < 0)
        return rc;
    Onceiot__Support__V1__ListCommentsResponse *out = arena_alloc(cx.a, sizeof(*out));
    onceiot__support__v1__list_comments_response__init(out);
    int n = rc > size ? size : rc;
    if (rc > size)
        out->next_page_token = (char *)pagetoken_encode(cx.a, hash, db_get(res, n - 1, "id"), "");
    out->comments = arena_alloc(cx.a, (size_t)(n ? n : 1) * sizeof(*out->comments));
    for (int i = 0; i < n; i++)
        out->comments[out->n_comments++] = support__comment_from_row(cx.a, res, i);
    PQclear(res);
    *resp = &out->base;
    return 0;
}
