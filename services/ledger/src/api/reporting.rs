//! `ferrobank.reporting.v1.ReportingService`: authenticates each call, turns protobuf
//! into the `app` inputs and the results back (errors through the ledger's one
//! `From<LedgerError> for Status`). Implemented: `GetStatement` (from the reporting
//! pool, with read-your-writes through `consistency_token`; see `app/statement.rs`) and
//! `GetReportingStatus` (where reports would be read from and how fresh they would
//! be). The other reports answer UNIMPLEMENTED until they are built.

use std::sync::Arc;
use std::time::SystemTime;

use ferrobank_config::ReportingFallback;
use ferrobank_db::DataSource;
use ferrobank_proto::reporting::reporting_service_server::ReportingService;
use ferrobank_proto::reporting::{
    self as pb, GetReportingStatusRequest, GetReportingStatusResponse, GetStatementRequest,
    GetStatementResponse,
};
use ferrobank_proto::status::invalid_field;
use tonic::{Request, Response, Status};

use super::ledger::{opt_id, timestamp_in, ts};
use crate::Ledger;
use crate::app::{Freshness, LedgerApp, StatementInput};

/// The reporting gRPC service.
#[derive(Clone)]
pub struct ReportingApi {
    ledger: Ledger,
    app: Arc<LedgerApp>,
}

impl ReportingApi {
    /// Wraps the shared state and the use cases (shared with the ledger service).
    pub fn new(ledger: Ledger, app: Arc<LedgerApp>) -> Self {
        Self { ledger, app }
    }
}

/// Checks a consistency token's shape: a Postgres LSN, `X/Y` in hex.
fn parse_lsn(token: &str) -> Result<Option<&str>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let valid = token.split_once('/').is_some_and(|(hi, lo)| {
        !hi.is_empty()
            && !lo.is_empty()
            && hi.len() <= 8
            && lo.len() <= 8
            && hi.chars().chain(lo.chars()).all(|c| c.is_ascii_hexdigit())
    });
    if valid {
        Ok(Some(token))
    } else {
        Err(invalid_field(
            "consistency_token",
            "must be a token returned by a ledger mutation",
        ))
    }
}

fn duration(micros: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1_000).unwrap_or(0),
    }
}

fn data_source_pb(source: DataSource) -> pb::DataSource {
    match source {
        DataSource::Replica => pb::DataSource::Replica,
        DataSource::Primary => pb::DataSource::Primary,
    }
}

fn freshness_pb(f: Freshness) -> pb::DataFreshness {
    pb::DataFreshness {
        data_source: data_source_pb(f.source) as i32,
        as_of_time: f.as_of.map(ts),
        staleness: f
            .staleness
            .map(|d| duration(d.num_microseconds().unwrap_or(i64::MAX))),
    }
}

#[tonic::async_trait]
impl ReportingService for ReportingApi {
    async fn get_statement(
        &self,
        request: Request<GetStatementRequest>,
    ) -> Result<Response<GetStatementResponse>, Status> {
        let p = self
            .ledger
            .auth
            .authenticate_request(request.metadata(), request.extensions())
            .await?;
        let r = request.into_inner();
        let consistency_token = parse_lsn(&r.consistency_token)?.map(str::to_owned);
        let input = StatementInput {
            page_size: r.page_size,
            page_token: r.page_token,
            account_id: r.account_id,
            start: timestamp_in("start_time", r.start_time)?,
            end: timestamp_in("end_time", r.end_time)?,
            consistency_token,
        };
        let s = self
            .app
            .statement(&p, &self.ledger.reporting, input)
            .await?;
        Ok(Response::new(GetStatementResponse {
            account_id: s.account_id.to_string(),
            currency_code: s.currency,
            start_time: Some(ts(s.start)),
            end_time: Some(ts(s.end)),
            opening_balance: s.opening_balance,
            closing_balance: s.closing_balance,
            total_debits: s.total_debits,
            total_credits: s.total_credits,
            lines: s
                .lines
                .into_iter()
                .map(|l| pb::StatementLine {
                    entry_id: l.entry_id.to_string(),
                    transfer_id: l.transfer_id.to_string(),
                    counterparty_account_id: opt_id(l.counterparty),
                    amount: l.amount,
                    running_balance: l.running_balance,
                    description: l.description,
                    create_time: Some(ts(l.created_at)),
                })
                .collect(),
            next_page_token: s.next_page_token,
            freshness: Some(freshness_pb(s.freshness)),
        }))
    }

    async fn get_reporting_status(
        &self,
        request: Request<GetReportingStatusRequest>,
    ) -> Result<Response<GetReportingStatusResponse>, Status> {
        // Any authenticated caller may ask where reports come from; reports themselves
        // (with their issue) check ownership per account.
        self.ledger
            .auth
            .authenticate_request(request.metadata(), request.extensions())
            .await?;
        let token = parse_lsn(&request.get_ref().consistency_token)?;
        let fallback = self.ledger.reporting.fallback() == ReportingFallback::Primary;

        // On a standby the replay functions describe the replica; on the primary they
        // are NULL and the read is live.
        let (row, source) = self
            .ledger
            .reporting
            .read(|conn, _| async move {
                conn.query_one(
                    "SELECT pg_is_in_recovery(),
                            pg_last_xact_replay_timestamp(),
                            (EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())
                                * 1000000)::bigint,
                            COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(),
                                                     pg_last_wal_replay_lsn()), 0)::bigint,
                            CASE WHEN $1::text IS NULL THEN false
                                 WHEN pg_is_in_recovery()
                                     THEN pg_last_wal_replay_lsn() >= $1::text::pg_lsn
                                 ELSE pg_current_wal_lsn() >= $1::text::pg_lsn END",
                    &[&token],
                )
                .await
                .map_err(ferrobank_db::StoreError::from)
            })
            .await?;
        let in_recovery: bool = row.get(0);
        let last_replay: Option<SystemTime> = row.get(1);
        let lag_micros: Option<i64> = row.get(2);
        let lag_bytes: i64 = row.get(3);
        let token_replayed: bool = row.get(4);

        let now = prost_types::Timestamp::from(SystemTime::now());
        let freshness = match source {
            DataSource::Replica => pb::DataFreshness {
                data_source: pb::DataSource::Replica as i32,
                as_of_time: last_replay.map(prost_types::Timestamp::from),
                staleness: lag_micros.map(duration),
            },
            DataSource::Primary => pb::DataFreshness {
                data_source: pb::DataSource::Primary as i32,
                as_of_time: Some(now),
                staleness: Some(duration(0)),
            },
        };
        let on_replica = source == DataSource::Replica;
        Ok(Response::new(GetReportingStatusResponse {
            freshness: Some(freshness),
            replica_reachable: on_replica,
            replica_in_recovery: on_replica && in_recovery,
            replay_lag: if on_replica {
                lag_micros.map(duration)
            } else {
                None
            },
            replay_lag_bytes: if on_replica { lag_bytes } else { 0 },
            last_replay_time: if on_replica {
                last_replay.map(prost_types::Timestamp::from)
            } else {
                None
            },
            primary_fallback_enabled: fallback,
            materialized_views: Vec::new(),
            consistency_token_replayed: token_replayed,
        }))
    }
}
