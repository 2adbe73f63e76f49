// Package docker is the family of modules that build and deploy a Docker
// swarm: swarm_init, node_label, docker_network, docker_secret and
// docker_config, stack_deploy and service_wait; docker_login and
// docker_image for registries; compose_up for a compose project. They run the docker CLI on
// the hosts; docker.go holds what they share.
package docker

import "github.com/iklimco/iklim/modules"

// Modules lists the family's modules for a registry.
func Modules() []modules.Info {
	return []modules.Info{
		swarmInitInfo(), nodeLabelInfo(), dockerNetworkInfo(), dockerSecretInfo(), dockerConfigInfo(),
		stackDeployInfo(), serviceWaitInfo(), dockerLoginInfo(), dockerImageInfo(), composeUpInfo(),
	}
}
