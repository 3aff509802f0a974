{# Weight-shared convolution synapses (bioconv) for brian2cuda. Blocks stride over the spikes
   of this step (brian2cuda's eventspace: count at [N_pre], order not defined), threads over the
   output window (c_out x rows x columns) a spike can reach; each thread runs the on_pre
   statement with _postsynaptic_idx (target) and _kernel_idx (kernel element) set here. With
   atomics (the on_pre statement translated to atomicAdd) spikes and targets run in parallel;
   otherwise one thread applies them serially. Geometry (conv.*) is compiled in. #}
{# USES_VARIABLES { _spikespace, N } #}
{% extends 'common_group.cu' %}

{% block kernel_maincode %}
{% set ry = (conv.kh + conv.sy - 1) // conv.sy %}
{% set rx = (conv.kw + conv.sx - 1) // conv.sx %}
{% set window = conv.c_out * ry * rx %}
    {% set _eventspace = get_array_name(variables['_spikespace']) %}
    ///// scalar_code /////
    {{scalar_code|autoindent}}

    const int32_t _num_events = {{_eventspace}}[{{conv.c_in * conv.h * conv.w}}];
    for (int32_t _event = blockIdx.x; _event < _num_events; _event += gridDim.x)
    {
        const int32_t _pre = {{_eventspace}}[_event];
        const int32_t _ci = _pre / {{conv.h * conv.w}};
        const int32_t _yx = _pre - _ci * {{conv.h * conv.w}};
        const int32_t _y = _yx / {{conv.w}} + {{conv.py}};
        const int32_t _x = _yx - (_yx / {{conv.w}}) * {{conv.w}} + {{conv.px}};
        const int32_t _ay = _y - {{conv.kh - 1}}, _ax = _x - {{conv.kw - 1}};
        const int32_t _oy0 = _ay <= 0 ? 0 : (_ay + {{conv.sy - 1}}) / {{conv.sy}};
        const int32_t _ox0 = _ax <= 0 ? 0 : (_ax + {{conv.sx - 1}}) / {{conv.sx}};
        const int32_t _oy1 = _y / {{conv.sy}} < {{conv.ho - 1}} ? _y / {{conv.sy}} : {{conv.ho - 1}};
        const int32_t _ox1 = _x / {{conv.sx}} < {{conv.wo - 1}} ? _x / {{conv.sx}} : {{conv.wo - 1}};
        for (int32_t _t = threadIdx.x; _t < {{window}}; _t += blockDim.x)
        {
            const int32_t _co = _t / {{ry * rx}};
            const int32_t _r = _t - _co * {{ry * rx}};
            const int32_t _oy = _oy0 + _r / {{rx}}, _ox = _ox0 + _r % {{rx}};
            if (_oy > _oy1 || _ox > _ox1)
                continue;
            const int32_t _postsynaptic_idx = (_co * {{conv.ho}} + _oy) * {{conv.wo}} + _ox;
            const int32_t _kernel_idx = (((_co * {{conv.c_in}} + _ci) * {{conv.kh}}) + _y - {{conv.sy}} * _oy)
                                        * {{conv.kw}} + _x - {{conv.sx}} * _ox;
            {
                ///// vector_code /////
                {{vector_code|autoindent}}
            }
        }
    }
{% endblock kernel_maincode %}

{% block define_N %}
    {# every launched thread works (the kernel strides over spikes and window itself) #}
    const int _N = 2147483647;
{% endblock %}

{% block prepare_kernel_inner %}
{% set ry = (conv.kh + conv.sy - 1) // conv.sy %}
{% set rx = (conv.kw + conv.sx - 1) // conv.sx %}
{% set window = conv.c_out * ry * rx %}
    {% if uses_atomics %}
    num_threads = {{ ((window + 31) // 32) * 32 }};  // the output window, rounded up to whole warps
    if (num_threads > max_threads_per_block) num_threads = max_threads_per_block;
    num_blocks = num_parallel_blocks;
    {% else %}
    // the on_pre statement could not be made atomic: one thread applies all effects in order
    num_threads = 1;
    num_blocks = 1;
    {% endif %}
{% endblock prepare_kernel_inner %}
