package policy

import (
	"maps"
	"net/url"
)

// redactedPassword is what url.URL.Redacted puts in a password's place.
const redactedPassword = "xxxxx"

// RedactValue returns v with the password of a Secret setting's URL hidden
// ("http://user:xxxxx@proxy:3128"); other values are returned as they are.
func RedactValue(product, key string, v any) any {
	s, ok := Lookup(product, key)
	str, isString := v.(string)
	if !ok || !s.Secret || !isString {
		return v
	}
	u, err := url.Parse(str)
	if err != nil {
		return str
	}
	return u.Redacted()
}

// Redacted returns settings as views and the audit log show them: the
// passwords of Secret settings hidden. settings is not changed.
func Redacted(product string, settings map[string]Value) map[string]Value {
	out := maps.Clone(settings)
	for k, v := range out {
		v.Value = RedactValue(product, k, v.Value)
		out[k] = v
	}
	return out
}

// KeepSecrets puts back, in next, the passwords prev holds where next
// carries them hidden: a client that sends back the settings it read
// (redacted) does not change a password it never saw. A hidden password
// is put back only for the same URL with the same user.
func KeepSecrets(product string, prev, next map[string]Value) {
	for k, v := range next {
		old, ok := prev[k]
		if !ok {
			continue
		}
		nu, ok1 := secretURL(product, k, v.Value)
		ou, ok2 := secretURL(product, k, old.Value)
		if !ok1 || !ok2 || nu.User == nil || ou.User == nil {
			continue
		}
		pw, set := nu.User.Password()
		if !set || pw != redactedPassword {
			continue
		}
		oldPW, oldSet := ou.User.Password()
		if !oldSet || nu.User.Username() != ou.User.Username() || nu.Scheme != ou.Scheme || nu.Host != ou.Host {
			continue
		}
		nu.User = url.UserPassword(ou.User.Username(), oldPW)
		v.Value = nu.String()
		next[k] = v
	}
}

func secretURL(product, key string, v any) (*url.URL, bool) {
	s, ok := Lookup(product, key)
	str, isString := v.(string)
	if !ok || !s.Secret || !isString {
		return nil, false
	}
	u, err := url.Parse(str)
	return u, err == nil
}
