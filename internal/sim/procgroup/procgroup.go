// Package procgroup runs a harness's child (Kamailio, Squid, wineserver) in a
// session and process group of its own, so that stopping it by PID also ends the
// helpers it forked, and never signals the group of the process that started it.
package procgroup
