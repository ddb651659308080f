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
	for _, u := range list {
		ac, err := c.AccountFor(u)
		if err != nil {
			unserved = append(unserved, Unserved{User: u, Err: err})
			continue
		}
		byAccount[ac.ID] = append(byAccount[ac.ID], u)
	}
	return byAccount, unserved
}
