//! Roles: which Kubernetes service accounts may log in to a kstash
//! namespace, and with which policies.
