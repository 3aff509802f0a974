{# Weight-shared convolution synapses (bioconv): the spikes of this step, in ascending
   presynaptic order, each reach every output neuron its kernel covers; the on_pre
   statement runs with _postsynaptic_idx (target) and _kernel_idx (kernel element) set here.
   Geometry (conv.*) is compiled in. #}
{# USES_VARIABLES { _spikespace } #}
{% extends 'common_group.cpp' %}
{% block maincode %}
    {% set _eventspace = get_array_name(variables['_spikespace']) %}
    // scalar code
    const size_t _vectorisation_idx = -1;
    {{scalar_code|autoindent}}

    const int32_t _num_events = {{_eventspace}}[{{conv.c_in * conv.h * conv.w}}];
    for (int32_t _event = 0; _event < _num_events; _event++)
    {
        const int32_t _pre = {{_eventspace}}[_event];
        const int32_t _ci = _pre / {{conv.h * conv.w}};
        const int32_t _yx = _pre - _ci * {{conv.h * conv.w}};
        const int32_t _y = _yx / {{conv.w}} + {{conv.py}};
        const int32_t _x = _yx - (_yx / {{conv.w}}) * {{conv.w}} + {{conv.px}};
        // output rows/columns with 0 <= k = in + pad - stride*out < kernel
        const int32_t _ay = _y - {{conv.kh - 1}}, _ax = _x - {{conv.kw - 1}};
        const int32_t _oy0 = _ay <= 0 ? 0 : (_ay + {{conv.sy - 1}}) / {{conv.sy}};
        const int32_t _ox0 = _ax <= 0 ? 0 : (_ax + {{conv.sx - 1}}) / {{conv.sx}};
        const int32_t _oy1 = _y / {{conv.sy}} < {{conv.ho - 1}} ? _y / {{conv.sy}} : {{conv.ho - 1}};
        const int32_t _ox1 = _x / {{conv.sx}} < {{conv.wo - 1}} ? _x / {{conv.sx}} : {{conv.wo - 1}};
        for (int32_t _co = 0; _co < {{conv.c_out}}; _co++)
        {
            const int32_t _kbase = (_co * {{conv.c_in}} + _ci) * {{conv.kh}};
            for (int32_t _oy = _oy0; _oy <= _oy1; _oy++)
            {
                const int32_t _krow = (_kbase + _y - {{conv.sy}} * _oy) * {{conv.kw}} + _x;
                const int32_t _prow = (_co * {{conv.ho}} + _oy) * {{conv.wo}};
                for (int32_t _ox = _ox0; _ox <= _ox1; _ox++)
                {
                    const int32_t _postsynaptic_idx = _prow + _ox;
                    const int32_t _kernel_idx = _krow - {{conv.sx}} * _ox;
                    const size_t _idx = _kernel_idx;
                    const size_t _vectorisation_idx = _postsynaptic_idx;
                    {{vector_code|autoindent}}
                }
            }
        }
    }
{% endblock %}
