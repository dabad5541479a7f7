//! Three real `kstash server` processes on loopback (filled in next).
