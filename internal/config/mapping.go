package config

import "github.com/presencebridge/presencebridge/internal/presence"

// mapping reads [Mapping]: every key is a rule (see presence.Mapping.Set).
func (l *loader) mapping(cfg *Config, s *section) {
	cfg.Mapping = presence.DefaultMapping()
	for _, e := range s.free {
		if err := cfg.Mapping.Set(e.key, e.value); err != nil {
			l.add(e.line, "%s = %q: %v", e.label(), e.value, err)
		}
	}
}

// mappingRedacted lists the rules that differ from the defaults.
func (c *Config) mappingRedacted(kv func(k, v string)) {
	def := presence.DefaultMapping()
	for _, k := range c.Mapping.Keys() {
		r, _ := c.Mapping.Rule(k)
		if d, ok := def.Rule(k); !ok || d != r {
			kv(k, r.String())
		}
	}
}
