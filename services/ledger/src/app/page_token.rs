//! Opaque page tokens (AIP-158): URL-safe base64 of a small versioned JSON document
//! holding the keyset position and the query it was issued for, so a token replayed
//! with other filters (or a garbled one) is refused with INVALID_PAGE_TOKEN.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{LedgerError, LedgerResult};

const VERSION: u8 = 1;

/// Where the next page starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Position {
    /// Accounts with id greater than this.
    Account { after: Uuid },
    /// Transfers with id less than this.
    Transfer { before: Uuid },
    /// Entries before (created_at in µs since the epoch, seq).
    Entry { at_us: i64, seq: i64 },
    /// Currencies with a code greater than this.
    Currency { after: String },
    /// Statement lines after (created_at in µs, seq), oldest first, in a period that
    /// ends at `end_us`: the end the first page resolved ("now" when the request left
    /// it unset), so every page covers the same period.
    Statement { at_us: i64, seq: i64, end_us: i64 },
}

#[derive(Serialize, Deserialize)]
struct Token {
    v: u8,
    /// The canonical text of the query (filters) the token belongs to.
    q: String,
    p: Position,
}

/// The token for the page after `position` of `query`.
pub fn encode(query: &str, position: Position) -> String {
    let token = Token {
        v: VERSION,
        q: query.to_owned(),
        p: position,
    };
    let json = serde_json::to_vec(&token).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// The position in `token` (None for the first page), if it was issued for `query`.
pub fn decode(token: &str, query: &str) -> LedgerResult<Option<Position>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| LedgerError::InvalidPageToken)?;
    let parsed: Token =
        serde_json::from_slice(&bytes).map_err(|_| LedgerError::InvalidPageToken)?;
    if parsed.v != VERSION || parsed.q != query {
        return Err(LedgerError::InvalidPageToken);
    }
    Ok(Some(parsed.p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A token decodes to its position for its own query and is refused for any
        /// other query.
        #[test]
        fn round_trips_only_for_its_query(q in ".{0,30}", other in ".{0,30}", at in any::<i64>(), seq in any::<i64>()) {
            let pos = Position::Entry { at_us: at, seq };
            let token = encode(&q, pos.clone());
            prop_assert_eq!(decode(&token, &q).ok(), Some(Some(pos)));
            if other != q {
                prop_assert!(matches!(decode(&token, &other), Err(LedgerError::InvalidPageToken)));
            }
        }

        /// Garbage never panics: it is refused (or, by chance, a valid token).
        #[test]
        fn garbage_is_refused(s in ".{1,60}") {
            prop_assert!(matches!(decode(&s, "q"), Err(LedgerError::InvalidPageToken) | Ok(Some(_))));
        }
    }
}
