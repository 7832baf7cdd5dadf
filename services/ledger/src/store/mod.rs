//! Every SQL string the ledger runs. (Being written.)
