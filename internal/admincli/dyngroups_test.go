package admincli_test

import (
	"strings"
	"testing"
)

type dynGroup struct {
	ID            string  `json:"id"`
	Name          string  `json:"name"`
	Description   string  `json:"description"`
	Members       int     `json:"members"`
	ParentDynamic *string `json:"parent_dynamic"`
	Parent        *struct {
		Path string `json:"path"`
	} `json:"parent"`
	Template struct {
		Op    string `json:"op"`
		Rules []struct {
			Field, Operator, Value string
		} `json:"rules"`
	} `json:"template"`
	Version int64 `json:"version"`
}

const webTemplate = `{"op": "and", "rules": [{"field": "hostname", "operator": "prefix", "value": "web"}]}`

func TestDynamicGroups(t *testing.T) {
	t.Parallel()
	h, f := startFull(t)
	h.ok("", "groups", "create", "Servers")
	f.add("web-01", "Servers", true)
	f.add("web-02", "Servers", false)
	f.add("db-01", "Servers", true)
	f.add("web-99", "Lost & Found", true)

	// Preview: nothing is saved.
	out := h.ok("", "dynamic-groups", "preview", "--template", webTemplate, "--parent", "Servers")
	if !strings.Contains(out, "web-01") || !strings.Contains(out, "web-02") || strings.Contains(out, "db-01") || strings.Contains(out, "web-99") ||
		!strings.Contains(out, "matching computers:  2") {
		t.Fatalf("preview under Servers:\n%s", out)
	}
	var pl list[computer]
	h.jsonOut(&pl, "", "dynamic-groups", "preview", "--template", webTemplate) // under All
	if pl.Total != 3 {
		t.Fatalf("preview under All: %+v", pl)
	}

	// Create from a file, under a static group.
	tplFile := writeFile(t, "web.json", "\n"+webTemplate+"\n")
	var web dynGroup
	h.jsonOut(&web, "", "dynamic-groups", "create", "Web servers", "--template", "@"+tplFile, "--parent", "Servers", "--description", "front ends")
	if web.Name != "Web servers" || web.Parent == nil || web.Parent.Path != "All/Servers" || web.Description != "front ends" ||
		web.Template.Op != "and" || len(web.Template.Rules) != 1 || web.Version != 1 {
		t.Fatalf("created %+v", web)
	}
	h.eventually("the members of Web servers", func() bool {
		var g dynGroup
		h.jsonOut(&g, "", "dynamic-groups", "show", "Web servers")
		return g.Members == 2
	})
	out = h.ok("", "dynamic-groups", "members", "Web servers")
	if !strings.Contains(out, "web-01") || !strings.Contains(out, "web-02") || strings.Contains(out, "db-01") {
		t.Fatalf("members:\n%s", out)
	}
	var ml list[computer]
	h.jsonOut(&ml, "", "dynamic-groups", "members", web.ID, "--status", "online")
	if ml.Total != 1 || ml.Items[0].Name != "web-01" {
		t.Fatalf("online members: %+v", ml)
	}

	// A child narrowing the parent down, given inline (from stdin).
	var child dynGroup
	h.jsonOut(&child, `{"op":"and","rules":[{"field":"hostname","operator":"contains","value":"01"}]}`,
		"dynamic-groups", "create", "Web 01", "--template", "@-", "--parent-dynamic", "Web servers")
	if child.ParentDynamic == nil || *child.ParentDynamic != web.ID || child.Parent != nil {
		t.Fatalf("child %+v", child)
	}
	out = h.ok("", "dynamic-groups", "show", "Web 01")
	for _, want := range []string{"dynamic group Web servers", "access group:", "All/Servers", "FIELD", "hostname  contains  01"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	out = h.ok("", "dynamic-groups", "list")
	if !strings.Contains(out, "Web servers") || !strings.Contains(out, "Web 01") || !strings.Contains(out, "dynamic group Web servers") {
		t.Fatalf("list:\n%s", out)
	}

	// Updates carry the version.
	var up dynGroup
	h.jsonOut(&up, "", "dynamic-groups", "update", "Web servers", "--name", "Web", "--description", "")
	if up.Name != "Web" || up.Description != "" || up.Version != 2 || up.Template.Op != "and" {
		t.Fatalf("renamed %+v", up)
	}
	h.jsonOut(&up, "", "dynamic-groups", "update", "Web", "--template", `{"op":"or","rules":[{"field":"hostname","operator":"prefix","value":"db"}]}`)
	if up.Version != 3 || up.Template.Op != "or" || up.Template.Rules[0].Value != "db" {
		t.Fatalf("new template %+v", up)
	}

	// Bad input.
	h.fails(2, "--template is not valid JSON", "", "dynamic-groups", "create", "x", "--template", "{")
	h.fails(2, "--template: open", "", "dynamic-groups", "create", "x", "--template", "@"+tplFile+".missing")
	h.fails(1, `unknown field "uptime"`, "", "dynamic-groups", "create", "x", "--template", `{"op":"and","rules":[{"field":"uptime","operator":"=","value":"1"}]}`)
	h.fails(1, "template op must be", "", "dynamic-groups", "preview", "--template", `{"op":"xor","rules":[]}`)
	h.fails(2, "--template is required", "", "dynamic-groups", "create", "x")
	h.fails(2, "not both", "", "dynamic-groups", "create", "x", "--template", webTemplate, "--parent", "Servers", "--parent-dynamic", "Web")
	h.fails(2, "nothing to change", "", "dynamic-groups", "update", "Web")
	h.fails(2, "missing arguments", "", "dynamic-groups", "show")
	h.fails(1, `dynamic group "nope" not found`, "", "dynamic-groups", "show", "nope")
	h.fails(1, `dynamic group "nope" not found`, "", "dynamic-groups", "create", "x", "--template", webTemplate, "--parent-dynamic", "nope")
	h.fails(1, "not found", "", "dynamic-groups", "create", "x", "--template", webTemplate, "--parent", "Nowhere")
	if r := h.run("", "dynamic-groups", "list", "--bogus"); r.code != 2 || !strings.Contains(r.stderr, "flag provided but not defined: -bogus") {
		t.Fatalf("unknown flag: %+v", r)
	}
	// Two groups of one name: the name is ambiguous, the id is not.
	var twin dynGroup
	h.jsonOut(&twin, "", "dynamic-groups", "create", "Web 01", "--template", webTemplate)
	h.fails(1, `2 dynamic groups are named "Web 01"; give the id`, "", "dynamic-groups", "show", "Web 01")
	h.ok("", "dynamic-groups", "delete", twin.ID)

	// Delete: the child first (a parent with children is refused by the API).
	h.fails(1, "delete them first", "", "dynamic-groups", "delete", "Web")
	if out := h.ok("", "dynamic-groups", "delete", "Web 01"); !strings.Contains(out, "Dynamic group Web 01 deleted.") {
		t.Errorf("delete said %q", out)
	}
	h.ok("", "dynamic-groups", "delete", "Web")
	var all list[dynGroup]
	h.jsonOut(&all, "", "dynamic-groups", "list")
	if all.Total != 0 {
		t.Fatalf("left %+v", all)
	}
}
