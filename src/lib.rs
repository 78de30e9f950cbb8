//! ctp — continual vision-language pretraining (CTP, ICCV 2023) as a service.
//!
//! - [`trainer`]: the engine. Owns every libtorch tensor on one thread; models, CTP losses,
//!   drift-gated compatible momentum, feature queue, AdamW, checkpoints, evaluation.
//! - [`metrics`]: pure continual-learning metrics (retrieval recall, accuracy matrix,
//!   forgetting, BWT).
//! - [`images`]: image decoding and preprocessing to fixed-size RGB (no libtorch).
pub mod images;
pub mod metrics;
pub mod trainer;
pub mod api;
pub mod store;
