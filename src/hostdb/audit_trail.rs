//! The audit trail (`audit_trail`, append-only) and pending grants of delegated
//! administration (`auth_grant_requests`, V0002). Written by the auth service; read by tests,
//! the terminal and operators.

use time::OffsetDateTime;

use super::{HostDbError, Pool};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    Allowed,
    Refused,
    Error,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Allowed => "allowed",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Error => "error",
        }
    }

    fn parse(text: &str) -> AuditOutcome {
        match text {
            "allowed" => AuditOutcome::Allowed,
            "refused" => AuditOutcome::Refused,
            _ => AuditOutcome::Error,
        }
    }
}

/// One row to append: who, of which participant, did what to what, and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// A user (`B01234.ops1`), a certificate subject (`cert:CN=...`) or a service.
    pub actor: String,
    pub participant_id: Option<String>,
    /// `auth.authorise`, `auth.administer.grant`, ...
    pub action: String,
    pub target: Option<String>,
    pub outcome: AuditOutcome,
    /// Structured detail: function, group, reason code, ...
    pub detail: serde_json::Value,
}

/// A stored row.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub audit_id: i64,
    pub at: OffsetDateTime,
    pub record: AuditRecord,
}

/// Appends one row; returns its id.
pub async fn append(pool: &Pool, record: &AuditRecord) -> Result<i64, HostDbError> {
    // Names and details can come from the request being decided (a user id, a target):
    // stored as given but for NUL, which would refuse the row and so the decision's record.
    let actor = super::storable_text(&record.actor);
    let participant_id = record.participant_id.as_deref().map(super::storable_text);
    let target = record.target.as_deref().map(super::storable_text);
    let detail = super::storable_json(&record.detail);
    let client = super::client(pool).await?;
    let row = client
        .query_one(
            "INSERT INTO audit_trail (actor, participant_id, action, target, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING audit_id",
            &[
                &actor.as_ref(),
                &participant_id.as_deref(),
                &record.action,
                &target.as_deref(),
                &record.outcome.as_str(),
                &detail.as_ref(),
            ],
        )
        .await
        .map_err(|error| HostDbError::from_postgres("append to audit_trail", error))?;
    Ok(row.get(0))
}

/// Rows whose action starts with `action_prefix`, oldest first, at most `limit`.
pub async fn list(
    pool: &Pool,
    action_prefix: &str,
    limit: i64,
) -> Result<Vec<AuditRow>, HostDbError> {
    let client = super::client(pool).await?;
    let pattern = format!("{}%", like_escape(action_prefix));
    let rows = client
        .query(
            "SELECT audit_id, at, actor, participant_id, action, target, outcome, detail \
             FROM audit_trail WHERE action LIKE $1 ORDER BY audit_id LIMIT $2",
            &[&pattern, &limit],
        )
        .await
        .map_err(|error| HostDbError::from_postgres("read audit_trail", error))?;
    Ok(rows
        .into_iter()
        .map(|row| AuditRow {
            audit_id: row.get(0),
            at: row.get(1),
            record: AuditRecord {
                actor: row.get(2),
                participant_id: row.get(3),
                action: row.get(4),
                target: row.get(5),
                outcome: AuditOutcome::parse(row.get(6)),
                detail: row.get(7),
            },
        })
        .collect())
}

fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A grant waiting for a second administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    pub grant_id: i64,
    pub participant_id: String,
    pub uid: String,
    pub group: String,
    pub requested_by: String,
    pub requested_at: OffsetDateTime,
}

fn grant_request(row: &tokio_postgres::Row) -> GrantRequest {
    GrantRequest {
        grant_id: row.get(0),
        participant_id: row.get(1),
        uid: row.get(2),
        group: row.get(3),
        requested_by: row.get(4),
        requested_at: row.get(5),
    }
}

const GRANT_COLUMNS: &str = "grant_id, participant_id, uid, user_group, requested_by, requested_at";

/// Records a pending grant, or returns the one already pending for the same user and group.
pub async fn request_grant(
    pool: &Pool,
    participant_id: &str,
    uid: &str,
    group: &str,
    requested_by: &str,
) -> Result<GrantRequest, HostDbError> {
    let client = super::client(pool).await?;
    let inserted = client
        .query_opt(
            &format!(
                "INSERT INTO auth_grant_requests (participant_id, uid, user_group, requested_by) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING {GRANT_COLUMNS}"
            ),
            &[&participant_id, &uid, &group, &requested_by],
        )
        .await
        .map_err(|error| HostDbError::from_postgres("insert auth_grant_requests", error))?;
    if let Some(row) = inserted {
        return Ok(grant_request(&row));
    }
    let row = client
        .query_one(
            &format!(
                "SELECT {GRANT_COLUMNS} FROM auth_grant_requests \
                 WHERE participant_id = $1 AND uid = $2 AND user_group = $3 AND status = 'pending'"
            ),
            &[&participant_id, &uid, &group],
        )
        .await
        .map_err(|error| HostDbError::from_postgres("read auth_grant_requests", error))?;
    Ok(grant_request(&row))
}

/// The pending grant with this id, if it is still pending.
pub async fn pending_grant(
    pool: &Pool,
    grant_id: i64,
) -> Result<Option<GrantRequest>, HostDbError> {
    let client = super::client(pool).await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT {GRANT_COLUMNS} FROM auth_grant_requests \
                 WHERE grant_id = $1 AND status = 'pending'"
            ),
            &[&grant_id],
        )
        .await
        .map_err(|error| HostDbError::from_postgres("read auth_grant_requests", error))?;
    Ok(row.as_ref().map(grant_request))
}

/// Pending grants, of one participant or (None) of all, oldest first.
pub async fn pending_grants(
    pool: &Pool,
    participant_id: Option<&str>,
) -> Result<Vec<GrantRequest>, HostDbError> {
    let client = super::client(pool).await?;
    let rows = client
        .query(
            &format!(
                "SELECT {GRANT_COLUMNS} FROM auth_grant_requests \
                 WHERE status = 'pending' AND ($1::text IS NULL OR participant_id = $1) \
                 ORDER BY grant_id"
            ),
            &[&participant_id],
        )
        .await
        .map_err(|error| HostDbError::from_postgres("read auth_grant_requests", error))?;
    Ok(rows.iter().map(grant_request).collect())
}

/// Moves a pending grant to `approved` or `rejected` by `decided_by`; false when it was no
/// longer pending (decided by someone else meanwhile). The schema refuses a decision by the
/// requester.
pub async fn decide_grant(
    pool: &Pool,
    grant_id: i64,
    approved: bool,
    decided_by: &str,
) -> Result<bool, HostDbError> {
    let client = super::client(pool).await?;
    let status = if approved { "approved" } else { "rejected" };
    let changed = client
        .execute(
            "UPDATE auth_grant_requests SET status = $2, decided_by = $3, decided_at = now() \
             WHERE grant_id = $1 AND status = 'pending'",
            &[&grant_id, &status, &decided_by],
        )
        .await
        .map_err(|error| HostDbError::from_postgres("decide auth_grant_requests", error))?;
    Ok(changed == 1)
}
