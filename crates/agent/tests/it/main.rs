//! The agent's integration tests, one binary (one link, shared fixtures):
//! the real library and the real `pos-connector` binary against the
//! simulators of `pos-sandbox` on 127.0.0.1:0, real files in temp folders,
//! a real SQLite outbox.

mod common;

mod catch_up;
mod cli;
mod config_rules;
mod exactly_once;
mod heartbeat;
mod inbox;
mod install;
mod laravel_client;
mod local_api;
mod local_api_limits;
mod module_graph;
mod old_data;
mod qbo_cache;
mod qbo_share;
mod quickbooks;
mod receipt_images;
mod resilience;
mod service;
mod status_page_browser;
