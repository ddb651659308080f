package fileperm

// Adopt does nothing on Windows: the service runs as LocalSystem, and the folder's
// ACL (SYSTEM and Administrators only) is inherited by new files.
func Adopt(string, bool) error { return nil }
