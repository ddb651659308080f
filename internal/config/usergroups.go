package config

import "github.com/presencebridge/presencebridge/internal/users"

// Unserved is a user of the users file that no account serves, and why.
type Unserved struct {
	User users.User
	Err  error
}

// GroupUsers sorts the users file's users by the id of the account that serves
// each (AccountFor), in file order; users no account serves come back apart.
func (c *Config) GroupUsers(list []users.User) (byAccount map[string][]users.User, unserved []Unserved) {
	byAccount = make(map[string][]users.User, len(c.Accounts))
	// Two passes, so each account's list is allocated once at its size (the
	// users of a 200,000-line file are 17 MB as a list); the users file's own
	// list when one account serves everyone.
	of := make([]string, len(list))
	count := make(map[string]int, len(c.Accounts))
	for i, u := range list {
		ac, err := c.AccountFor(u)
		if err != nil {
			unserved = append(unserved, Unserved{User: u, Err: err})
			continue
		}
		of[i] = ac.ID
		count[ac.ID]++
	}
	if len(count) == 1 && len(unserved) == 0 {
		for id := range count {
			byAccount[id] = list[:len(list):len(list)]
		}
		return byAccount, nil
	}
	for id, n := range count {
		byAccount[id] = make([]users.User, 0, n)
	}
	for i, u := range list {
		if of[i] != "" {
			byAccount[of[i]] = append(byAccount[of[i]], u)
		}
	}
	return byAccount, unserved
}
