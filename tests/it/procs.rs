//! Real `kstash server` processes for the process-cluster tests (filled in next).
