//! Use cases: validation, authorization and the service's error enum. (Being written.)
