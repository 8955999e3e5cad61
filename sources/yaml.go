package sources

import "go.yaml.in/yaml/v3"

// YAMLNull reports whether n is a YAML null.
func YAMLNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// YAMLAlias follows n's aliases to the node they name.
func YAMLAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}
