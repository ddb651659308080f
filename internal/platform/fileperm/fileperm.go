// Package fileperm hands files that root creates for the service to the service
// account. A field engineer runs `sudo presencebridge login` (or `secret encrypt`)
// before the first start; the state file or key file it creates must then be
// usable by the unprivileged account the service runs as (presencebridge, which
// owns /var/lib/presencebridge and is the group of /etc/presencebridge).
package fileperm
