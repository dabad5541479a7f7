//! The one integration-test binary: in-process nodes over real sockets, and
//! the real `kstash` binary for the CLI. Scenario files are named by intent.

mod common;
mod procs;
mod t10_rest;
mod t12_grpc;
mod t13_proto;
mod t15_tls;
mod t20_lifecycle;
mod t30_cli;
mod t32_bench_compare;
mod t35_kubernetes_roles;
mod t36_listing;
mod t40_leaks;
mod t44_no_credential;
mod t46_data_dir;
mod t48_sealed_service;
mod t50_bad_input;
mod t60_cluster_transport;
mod t70_cluster;
mod t71_membership;
mod t72_unseal;
mod t73_rekey;
mod t74_admin;
mod t75_encryption_limit;
mod t76_faults;
mod t77_retries;
mod t78_backends;
mod t79_restore;
mod t80_processes;
mod t82_health;
mod t84_connections;
mod t86_http_edges;
mod t87_audit;
mod t88_operator_log;
mod t89_metrics;
