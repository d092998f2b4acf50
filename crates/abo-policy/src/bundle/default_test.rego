# Tests of the default bundle; `abo policy test` runs them with the user's own.
package abo

test_forbidden_path_denied if {
	count(deny) > 0 with input as {"change": {"files": [{"path": ".env.local", "binary": false}]}}
		with data.abo.config as {"forbidden_paths": [".env*"]}
}

test_docs_are_low_risk if {
	risk == "low" with input as {"change": {"files": [{"path": "docs/guide.md", "binary": false}], "lines_added": 3, "lines_removed": 0}}
}

test_auth_code_is_critical if {
	risk == "critical" with input as {"change": {"files": [{"path": "src/auth/login.rs", "binary": false}], "lines_added": 3, "lines_removed": 0}}
}

test_out_of_scope_needs_approval if {
	count(require_approval) == 1 with input as {"task": {"paths": ["src/**"]}, "change": {"files": [{"path": "README.md", "binary": false}]}}
}

test_abo_config_is_protected if {
	count(deny) == 1 with input as {"change": {"files": [{"path": "abo.yml", "binary": false}]}}
}

test_protected_may_need_approval_instead if {
	count(require_approval) == 1 with input as {"change": {"files": [{"path": ".abo/policy/p.rego", "binary": false}]}}
		with data.abo.config as {"protected": "needs_approval"}
}
